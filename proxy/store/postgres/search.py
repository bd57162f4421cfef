"""Full-text search statements for the Postgres store (the counterpart of sqlite/fts.py).

Free text never reaches tsquery syntax directly: it is split into word tokens by the same
`query_terms` as the SQLite store (stopwords dropped, at most 32 terms) and the tokens are
joined with " or " for `websearch_to_tsquery`, which never raises a syntax error. So the
semantics match FTS5's: any word matches, more matches rank higher. Both the query and the
indexed text go through `memproxy_fold()` (diacritics removed, see migrations.py).

The tsquery is computed once per search in a MATERIALIZED CTE `q`: `terms` ranks (ts_rank_cd),
`scoped` (terms AND the agent's scope lexeme, see migrations.py) matches through the GIN index.
A query that folds to no lexeme at all (only stopwords) yields no `q` row, hence no hits: an
empty tsquery AND-ed with the scope would otherwise match every row of the agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...core.types import MessageHit
from ..query_terms import query_terms

# Ties: newest first, then by primary key, as on SQLite (sqlite/fts.py).
TIE_BREAK = "m.created_at DESC, m.pk DESC"


class _Args:
    """Collects positional parameters and hands out their `$n` placeholders."""

    def __init__(self, *initial: object) -> None:
        self.values: list[object] = list(initial)

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _query_cte(fts_config: str, text_param: str) -> str:
    return (f"WITH q AS MATERIALIZED (SELECT t AS terms, t && memproxy_scope_query($1) AS scoped"
            f" FROM websearch_to_tsquery('{fts_config}', memproxy_fold({text_param})) AS t"
            " WHERE numnode(t) > 0)")


def tsquery_text(query: str) -> str | None:
    """The websearch_to_tsquery input for `query` (terms OR-ed), or None for a blank query."""
    terms = query_terms(query)
    return " or ".join(terms) if terms else None


def hit_row(r: Sequence[Any]) -> MessageHit:
    """A MessageHit of a row (conversation_id, seq, role, text, created_at, name, score)."""
    return MessageHit(r[0], r[1], r[2], r[3], r[4], r[6], r[5])


def message_search_sql(
    fts_config: str, agent_pk: int, query: str, roles: list[str] | None, limit: int,
    start: float | None, end: float | None, newest: int | None = None,
) -> tuple[str, list[object]]:
    """SELECT (conversation_id, seq, role, text, created_at, name, score) for a recall search
    (`hit_row` makes a MessageHit of it).
    With `newest`, only the agent's newest that many matches are ranked, the other filters
    applying to those, as on SQLite (ts_rank_cd reads
    each row's tsvector: over every match of common words that is too slow for automatic
    recall on every turn, turn/recall.py).

    Visible, not superseded messages of one agent (evicted ones included), ranked by
    ts_rank_cd; a blank query lists the newest first with score 0 (messages_agent_recall).
    `fts_config` must be a validated configuration name (it is inlined as a literal).
    """
    args = _Args(agent_pk)
    where = ["m.agent_pk = $1", "m.visible", "NOT m.superseded"]
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
        sql = (f"SELECT {columns}, 0.0::float8 FROM messages m"
               " JOIN conversations c ON c.pk = m.conversation_pk"
               f" WHERE {' AND '.join(where)}"
               f" ORDER BY m.created_at DESC, m.pk DESC LIMIT {args.add(limit)}")
    elif newest is not None:
        cte = _query_cte(fts_config, args.add(text))
        sql = (f"{cte} SELECT {columns}, ts_rank_cd(m.tsv, q.terms, 1)::float8 AS score"
               " FROM q CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.tsv @@ q.scoped"
               f" AND {where[0]} ORDER BY m.pk DESC"
               f" LIMIT {args.add(max(1, int(newest)))}) m"
               " JOIN conversations c ON c.pk = m.conversation_pk"
               f" WHERE {' AND '.join(where[1:])}"
               f" ORDER BY score DESC, {TIE_BREAK} LIMIT {args.add(limit)}")
    else:
        sql = (f"{_query_cte(fts_config, args.add(text))}"
               f" SELECT {columns}, ts_rank_cd(m.tsv, q.terms, 1)::float8 AS score"
               " FROM q JOIN messages m ON m.tsv @@ q.scoped"
               " JOIN conversations c ON c.pk = m.conversation_pk"
               f" WHERE {' AND '.join(where)}"
               f" ORDER BY score DESC, {TIE_BREAK} LIMIT {args.add(limit)}")
    return sql, args.values


def passage_search_sql(
    fts_config: str, agent_pk: int, query: str, tags: list[str] | None, top_k: int,
    tags_json: str | None = None,
) -> tuple[str, list[object]]:
    """SELECT (pk, text, tags, created_at, score) for an archival search, like messages.

    `tags` keeps passages having ALL of them (jsonb containment); `tags_json` is their
    already-encoded JSON array, if the caller has it.
    """
    args = _Args(agent_pk)
    where = ["p.agent_pk = $1"]
    if tags:
        encoded = tags_json if tags_json is not None else json.dumps(list(tags))
        where.append(f"p.tags @> {args.add(encoded)}::jsonb")
    columns = "p.pk, p.text, p.tags, p.created_at"
    text = tsquery_text(query)
    if text is None:
        sql = (f"SELECT {columns}, 0.0::float8 FROM passages p WHERE {' AND '.join(where)}"
               f" ORDER BY p.pk DESC LIMIT {args.add(top_k)}")
    else:
        sql = (f"{_query_cte(fts_config, args.add(text))}"
               f" SELECT {columns}, ts_rank_cd(p.tsv, q.terms, 1)::float8 AS score"
               " FROM q JOIN passages p ON p.tsv @@ q.scoped"
               f" WHERE {' AND '.join(where)}"
               f" ORDER BY score DESC, p.created_at DESC, p.pk DESC LIMIT {args.add(top_k)}")
    return sql, args.values


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
