"""Full-text search statements for the Postgres store (the counterpart of sqlite/fts.py).

Free text never reaches tsquery syntax directly: it is split into word tokens by the same
`query_terms` as the SQLite store (stopwords dropped, at most 32 terms) and the tokens are
joined with " or " for `websearch_to_tsquery`, which never raises a syntax error. So the
semantics match FTS5's: any word matches, more matches rank higher. Both the query and the
indexed text go through `memproxy_fold()` (diacritics removed, see migrations.py).

Ranking is BM25, as SQLite ranks with FTS5's bm25 (`ts_rank_cd` counts occurrences and
proximity but not how rare a word is: on LoCoMo it found 7 points less of the evidence in its
top 10; issue 18). There are no term statistics to maintain: a word's document frequency is
counted among the query's matches, which the search reads anyway (see `_bm25_ctes`), and the
agent's row count is the counter the triggers already keep on the agent row. So the write path
is unchanged, and the statistics are always exact, per agent, over searchable rows only.

The tsquery is computed once per search in a MATERIALIZED CTE `q`: `scoped` (the terms AND the
agent's scope lexeme, see migrations.py) matches through the GIN index. A query that folds to
no lexeme at all (only stopwords) yields no `q` row, hence no hits: an empty tsquery AND-ed
with the scope would otherwise match every row of the agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...core.types import MessageHit
from ..query_terms import query_terms
from .message_terms import (
    CURRENT_VECTOR,
    WINDOW_PER_MATCH,
    matching_vectors,
    newest_ctes,
    newest_matches,
)
from .term_stats import Budgeted

# Ties: newest first, then by primary key, as on SQLite (sqlite/fts.py).
TIE_BREAK = "m.created_at DESC, m.pk DESC"


class _Args:
    """Collects positional parameters and hands out their `$n` placeholders."""

    def __init__(self, *initial: object) -> None:
        self.values: list[object] = list(initial)

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


# BM25 constants, FTS5's (and most engines'): term-frequency saturation and length weight.
K1, B = 1.2, 0.75


def _bm25_ctes(fts_config: str, text_param: str, words_param: str, docs_sql: str,
               matches_sql: str, limit_param: str, ties: str = "DESC",
               budgeted: tuple[str, str, str, str] | None = None, more_ctes: str = "") -> str:
    """CTEs ending in `ranked(pk, score)`: the best `limit_param` matches of the query by BM25,
    among those `keep` selects; equal scores by date, then primary key, in order `ties` (so the
    cut keeps the rows the final ORDER BY puts first: newest first, as on SQLite).

    `matches_sql` (pk, tsv, keep, at: the row's created_at) reads the rows matching any term, through the GIN index;
    `keep` is the caller's other filters (roles, dates, tags), read from the same heap rows:
    every match counts for the term statistics, so a filter never changes a row's score, and
    only the few best rows are joined back for their text.
    `q` holds the tsquery, its lexemes (the same words through to_tsvector: the same parser and
    dictionaries, so the same lexemes) and N, the rows searched (`docs_sql`; for an agent, the
    counter the triggers keep on its row). `hit` is the matches with each row's length and its
    tsvector cut to the query's lexemes (setweight marks them, ts_filter keeps them; the lexeme
    test after unnest guards against lexemes stored with weight A already): only those few
    lexemes' positions are unnested. A lexeme's document frequency is the number of matches
    holding it (every row holding a query term matches the OR-ed query), so IDF costs no extra
    read and is per agent. avgdl is the matches' mean length (the agent-wide mean would read
    every row). Lengths are distinct lexemes (`length(tsv)`), not tokens: a tsvector keeps no
    count.
    `idf` and `norm` are MATERIALIZED so that they are computed once: the planner expects one
    row from each CTE and otherwise re-ran the aggregate over `hit` for every row of `tf`.

    `budgeted` (the parameters of every query lexeme, their cached row counts, the tsquery of
    the rarest ones, the mean row length; term_stats.py) is the search of a query whose words
    are in too many rows to read: only the rows holding the rare lexemes are matched, every
    query lexeme's term frequency in them counts, and IDF and avgdl come from the agent-wide
    figures passed in, since the matches no longer hold every row of every word. `text_param`
    and `words_param` are unused then.
    """
    if budgeted is None:
        q = (f"SELECT t AS terms, t && memproxy_scope_query($1) AS scoped,"
             f" tsvector_to_array(to_tsvector('{fts_config}', memproxy_fold({words_param})))"
             f" AS lexemes, ({docs_sql})::float8 AS docs"
             f" FROM websearch_to_tsquery('{fts_config}', memproxy_fold({text_param})) AS t"
             " WHERE numnode(t) > 0")
        idf = ("SELECT tf.lexeme,"
               " ln(1 + (greatest(max(q.docs), count(*)) - count(*) + 0.5) / (count(*) + 0.5))"
               " AS idf FROM tf CROSS JOIN q GROUP BY tf.lexeme")
        norm = "SELECT greatest(avg(dl), 1) AS avgdl FROM hit"
    else:
        lexemes, counts, kept, mean = budgeted
        q = (f"SELECT t AS terms, t && memproxy_scope_query($1) AS scoped,"
             f" {lexemes}::text[] AS lexemes, ({docs_sql})::float8 AS docs"
             f" FROM (SELECT {kept}::text::tsquery AS t) k")
        idf = ("SELECT s.lexeme, ln(1 + (greatest(q.docs, s.df) - s.df + 0.5) / (s.df + 0.5))"
               f" AS idf FROM q CROSS JOIN unnest({lexemes}::text[], {counts}::float8[])"
               " AS s(lexeme, df)")
        norm = f"SELECT greatest({mean}::float8, 1) AS avgdl"
    return (f"WITH q AS MATERIALIZED ({q}), {more_ctes}"
            f" hit AS MATERIALIZED (SELECT h.pk, h.keep, h.at, length(h.tsv)::float8 AS dl,"
            " ts_filter(setweight(h.tsv, 'A', q.lexemes), '{a}') AS tv"
            f" FROM q CROSS JOIN LATERAL ({matches_sql}) h),"
            " tf AS (SELECT hit.pk, hit.keep, hit.at, hit.dl, u.lexeme,"
            " cardinality(u.positions)::float8 AS tf"
            " FROM hit CROSS JOIN q CROSS JOIN LATERAL unnest(hit.tv) u"
            " WHERE u.lexeme = ANY(q.lexemes)),"
            f" idf AS MATERIALIZED ({idf}), norm AS MATERIALIZED ({norm}),"
            f" ranked AS (SELECT tf.pk, sum(idf.idf * tf.tf * {K1 + 1} / (tf.tf + {K1}"
            f" * ({1 - B} + {B} * tf.dl / norm.avgdl))) AS score"
            " FROM tf JOIN idf USING (lexeme) CROSS JOIN norm WHERE tf.keep GROUP BY tf.pk, tf.at"
            f" ORDER BY score DESC, tf.at {ties}, tf.pk {ties} LIMIT {limit_param})")


def tsquery_text(query: str) -> str | None:
    """The websearch_to_tsquery input for `query` (terms OR-ed), or None for a blank query."""
    terms = query_terms(query)
    return " or ".join(terms) if terms else None


def hit_row(r: Sequence[Any]) -> MessageHit:
    """A MessageHit of a row (conversation_id, seq, role, text, created_at, name, score)."""
    return MessageHit(r[0], r[1], r[2], r[3], r[4], r[6], r[5])


def query_words(query: str) -> str:
    """The query's terms as plain text, for to_tsvector (its lexemes, for term statistics;
    term_stats.TermStats.plan reads them the same way)."""
    return " ".join(query_terms(query))


def _query_params(args: _Args, text: str, query: str, budgeted: Budgeted | None
                  ) -> tuple[str, str, tuple[str, str, str, str] | None]:
    """The placeholders `_bm25_ctes` takes for the query: its text and words, or (budgeted)
    only the lexemes, their counts, the kept ones and the mean length, so that no parameter
    goes unused (Postgres could not type it)."""
    if budgeted is None:
        return args.add(text), args.add(query_words(query)), None
    return "", "", (args.add(budgeted.lexemes), args.add(budgeted.counts),
                    args.add(budgeted.kept), args.add(budgeted.mean_length))


def message_search_sql(
    fts_config: str, agent_pk: int, query: str, roles: list[str] | None, limit: int,
    start: float | None, end: float | None, newest: int | None = None,
    budgeted: Budgeted | None = None,
) -> tuple[str, list[object]]:
    """SELECT (conversation_id, seq, role, text, created_at, name, score) for a recall search
    (`hit_row` makes a MessageHit of it).

    Visible, not superseded messages of one agent (evicted ones included), ranked by BM25
    (`_bm25_ctes`, as SQLite ranks with FTS5's bm25), ties newest first; a blank query lists
    the newest first with score 0 (messages_agent_recall). Term statistics are over all the
    agent's searchable messages, so `roles` and the dates filter the ranked rows without
    changing their scores. With `newest`, only the agent's newest that many matches are
    ranked (and counted for IDF), the other filters applying to those, as on SQLite: ranking
    reads each match's tsvector, and over every match of common words that is too slow for
    automatic recall on every turn (turn/recall.py). `budgeted` (term_stats.py): only the
    rows holding the query's rarest words are ranked, for a query whose words are in too many.
    `fts_config` must be a validated configuration name (it is inlined as a literal).
    """
    args = _Args(agent_pk)
    where: list[str] = []
    if roles:
        where.append(f"m.role = ANY({args.add(list(roles))}::text[])")
    if start is not None:
        where.append(f"m.created_at >= {args.add(float(start))}")
    if end is not None:
        where.append(f"m.created_at <= {args.add(float(end))}")
    columns = ("c.conversation_id, m.seq, m.role, m.text, m.created_at,"
               " memproxy_message_name(m.data)")
    text = tsquery_text(query)
    if text is None:
        where[:0] = ["m.agent_pk = $1", "m.visible", "NOT m.superseded"]
        sql = (f"SELECT {columns}, 0.0::float8 FROM messages m"
               " JOIN conversations c ON c.pk = m.conversation_pk"
               f" WHERE {' AND '.join(where)}"
               f" ORDER BY m.created_at DESC, m.pk DESC LIMIT {args.add(limit)}")
        return sql, args.values
    keep = " AND ".join(where) or "true"
    more = ""
    if newest is None:
        matches = matching_vectors("q.scoped", "m.visible AND NOT m.superseded",
                                   f"{keep} AS keep, m.created_at AS at")
    else:
        # The newest matches: from a window of the agent's newest vectors, and through the
        # GIN index only for rare words (message_terms.py). `u.pk + 0` there, not `u.pk`: an
        # order the primary key cannot give. Otherwise, once asyncpg's prepared statement
        # switches to Postgres's generic plan (after five runs), the planner may walk the
        # primary key backwards testing every row against the tsquery until it has `newest`
        # matches: all of the table's newer rows for a rare word (40-120 ms at 10k messages).
        n = max(1, int(newest))
        n_p, window_p = args.add(n), args.add(n * WINDOW_PER_MATCH)
        more = newest_ctes(keep, n_p, window_p)
        matches = newest_matches(keep, n_p, window_p)
    text_p, words_p, stats = _query_params(args, text, query, budgeted)
    ctes = _bm25_ctes(fts_config, text_p, words_p, "SELECT recall_count FROM agents WHERE pk = $1",
                      matches, args.add(limit), budgeted=stats, more_ctes=more)
    sql = (f"{ctes} SELECT {columns}, r.score::float8 AS score FROM ranked r"
           " JOIN messages m ON m.pk = r.pk JOIN conversations c ON c.pk = m.conversation_pk"
           f" ORDER BY score DESC, {TIE_BREAK}")
    return sql, args.values


def passage_search_sql(
    fts_config: str, agent_pk: int, query: str, tags: list[str] | None, top_k: int,
    tags_json: str | None = None, budgeted: Budgeted | None = None,
) -> tuple[str, list[object]]:
    """SELECT (pk, text, tags, created_at, score) for an archival search, like messages
    (term statistics over all the agent's passages; N from agents.passage_count).

    `tags` keeps passages having ALL of them (jsonb containment); `tags_json` is their
    already-encoded JSON array, if the caller has it; `budgeted` as for messages.
    """
    args = _Args(agent_pk)
    where = []
    if tags:
        encoded = tags_json if tags_json is not None else json.dumps(list(tags))
        where.append(f"p.tags @> {args.add(encoded)}::jsonb")
    columns = "p.pk, p.text, p.tags, p.created_at"
    text = tsquery_text(query)
    if text is None:
        where.insert(0, "p.agent_pk = $1")
        sql = (f"SELECT {columns}, 0.0::float8 FROM passages p WHERE {' AND '.join(where)}"
               f" ORDER BY p.pk DESC LIMIT {args.add(top_k)}")
        return sql, args.values
    text_p, words_p, stats = _query_params(args, text, query, budgeted)
    ctes = _bm25_ctes(fts_config, text_p, words_p,
                      "SELECT passage_count FROM agents WHERE pk = $1",
                      f"SELECT p.pk, p.tsv, {' AND '.join(where) or 'true'} AS keep, p.created_at AS at"
                      " FROM passages p WHERE p.tsv @@ q.scoped AND p.agent_pk = $1",
                      args.add(top_k), budgeted=stats)
    sql = (f"{ctes} SELECT {columns}, r.score::float8 AS score FROM ranked r"
           " JOIN passages p ON p.pk = r.pk ORDER BY score DESC, p.created_at DESC, p.pk DESC")
    return sql, args.values


def conversation_search_sql(
    fts_config: str, agent_pk: int, conversation_pk: int, query: str, limit: int,
    include_superseded: bool,
) -> tuple[str, list[object]] | None:
    """CTEs ending in `ranked(pk, score)`: the best `limit` visible messages of one
    conversation (superseded ones too if asked) by BM25, the statistics over those rows of
    the conversation, equal scores oldest first; None for a blank query. The caller selects
    from `ranked` (the transcript search of the agents API, admin.py)."""
    text = tsquery_text(query)
    if text is None:
        return None
    args = _Args(agent_pk, conversation_pk)
    hide = "" if include_superseded else " AND NOT m.superseded"
    rows = f"FROM messages m WHERE m.conversation_pk = $2 AND m.visible{hide}"
    ctes = _bm25_ctes(fts_config, args.add(text), args.add(query_words(query)),
                      f"SELECT count(*) {rows}",
                      f"SELECT v.pk, v.tsv, true AS keep, v.at FROM (SELECT m.pk,"
                      f" {CURRENT_VECTOR} AS tsv, m.created_at AS at {rows}) v"
                      " WHERE v.tsv @@ q.scoped",
                      args.add(limit), ties="ASC")
    return ctes, args.values


# The neighbouring turns of search hits, for all hits in one statement (core/hit_context.py):
# $1 the agent, $2/$3 the hits' conversation ids and seqs, $4 how many on each side; each side
# is an index range scan of messages_visible per hit.
# A turn: a user message, or an assistant message that calls no tool, with text (as on
# SQLite; `->` keeps escapes, so a \u0000 in the JSON cannot raise here).
_TURN = ("m.conversation_pk = c.pk AND m.visible AND NOT m.superseded AND m.text <> ''"
         " AND (m.role = 'user' OR (m.role = 'assistant' AND m.data -> 'tool_calls' IS NULL))")
NEIGHBOURS_SQL = (
    "SELECT h.i, h.cid, n.seq, n.role, n.text, n.created_at, n.name, 0.0::float8"
    " FROM unnest($2::text[], $3::integer[]) WITH ORDINALITY AS h(cid, seq, i)"
    " JOIN conversations c ON c.agent_pk = $1 AND c.conversation_id = h.cid"
    " CROSS JOIN LATERAL ("
    "(SELECT m.seq, m.role, m.text, m.created_at, memproxy_message_name(m.data) AS name"
    f" FROM messages m WHERE {_TURN}"
    " AND m.seq < h.seq ORDER BY m.seq DESC LIMIT $4)"
    " UNION ALL (SELECT m.seq, m.role, m.text, m.created_at,"
    f" memproxy_message_name(m.data) FROM messages m WHERE {_TURN}"
    " AND m.seq > h.seq ORDER BY m.seq LIMIT $4)) n"
    " ORDER BY h.i, n.seq"
)
