"""Turning free text into a safe SQLite FTS5 query, and the search statements built on it.

User (and model) text never reaches FTS5 syntax: it is split into word tokens (query_terms.py,
shared with Postgres), each token is quoted as a phrase, and the phrases are OR-ed, so `"`,
`*`, `NEAR(`, `-`, `AND` are just words or nothing.
"""

from __future__ import annotations

import json
import sqlite3

from ...core.types import MessageHit
from ..query_terms import query_terms


def quote(term: str) -> str:
    """An FTS5 string literal: wrapped in double quotes, inner quotes doubled."""
    return '"' + term.replace('"', '""') + '"'


def match_expression(query: str, agent_pk: int, columns: str = "text") -> str | None:
    """The MATCH expression for `query` within one agent's rows, or None for a blank query.

    The FTS tables index `text` and `fts_scope` ('a' || agent_pk), and for messages the
    speaker's `fts_name` too (migration 9); the terms are restricted to the text columns so
    that a user typing "a12" cannot match the scope.
    """
    terms = query_terms(query)
    if not terms:
        return None
    alternatives = " OR ".join(quote(t) for t in terms)
    return f"fts_scope : {quote(f'a{int(agent_pk)}')} AND {columns} : ({alternatives})"


# Messages: the words may be in the text or in the speaker's name, both weighted like text
# by bm25 (the scope column weighs nothing).
MESSAGE_COLUMNS = "{text fts_name}"
MESSAGE_BM25 = "bm25(messages_fts, 1.0, 0.0, 1.0)"


def message_match(query: str, agent_pk: int) -> str | None:
    """The MATCH expression for a message search (text and speaker name)."""
    return match_expression(query, agent_pk, MESSAGE_COLUMNS)


def unscoped_message_match(query: str) -> str | None:
    """The words alone, in the text and speaker columns, for every agent's rows: the caller
    keeps the agent's by joining `messages` (automatic recall's search, below)."""
    terms = query_terms(query)
    if not terms:
        return None
    return f"{MESSAGE_COLUMNS} : ({' OR '.join(quote(t) for t in terms)})"


# A passage has ALL the wanted tags: no wanted tag is missing from its JSON array.
_HAS_ALL_TAGS = (
    "NOT EXISTS (SELECT 1 FROM json_each(?) w"
    " WHERE w.value NOT IN (SELECT h.value FROM json_each(p.tags) h))"
)
# conversation_id by primary key per hit (a join may be planned as a scan after ANALYZE).
_HIT_COLUMNS = (
    "(SELECT conversation_id FROM conversations WHERE pk = m.conversation_pk),"
    " m.seq, m.role, m.text, m.created_at, m.fts_name"
)


# Equal scores (the same words in texts of the same length) are ordered newest first, then by
# primary key, so that every caller (the tool, automatic recall, the REST search) that asks for
# the same query lists ties in the same order, whatever LIMIT cuts off (docs/search.md).
TIE_BREAK = "m.created_at DESC, m.pk DESC"


def hit_row(r: tuple) -> MessageHit:
    """A MessageHit of a row (conversation_id, seq, role, text, created_at, name, score)."""
    return MessageHit(r[0], r[1], r[2], r[3], r[4], r[6], r[5])


def message_search_sql(
    agent_pk: int, query: str, roles: list[str] | None, limit: int,
    start: float | None, end: float | None, newest: int | None = None, ranked: bool = True,
) -> tuple[str, tuple]:
    """SELECT (conversation_id, seq, role, text, created_at, name, score) for a recall search
    (`hit_row` makes a MessageHit of it).

    Ranked by -bm25 (higher is better) with FTS5 driving the join (CROSS JOIN fixes the order),
    or, for a blank query, newest first from the messages_agent_recall index with score 0.

    With `newest`, only the agent's newest `newest` searchable matches are ranked, the other
    filters (roles, dates) applying to those, as on Postgres: FTS5 walks the index backwards and stops, because bm25 over every match of common
    words costs tens of milliseconds in a large agent, too much for automatic recall on every
    turn (turn/recall.py). That search leaves the agent's scope out of the MATCH and keeps the
    agent's rows by the join instead: bm25 reads the whole posting list of every phrase of the
    query once, for its IDF, and the scope phrase's list is every message of the agent
    (~0.28 ms of 0.53 at 10,000 messages), while it weighs nothing in the score. Ranks are the
    same; other agents' matches of the (rare, term_stats.py) words are stepped over unscored.
    With `ranked` False (even the rarest word of the query is common: term_stats.py) those
    newest matches are not scored at all: score 0, newest first.
    """
    where, params = ["m.agent_pk = ?", "m.visible = 1", "m.superseded = 0"], [agent_pk]
    if roles:
        where.append(f"m.role IN ({', '.join('?' * len(roles))})")
        params.extend(roles)
    if start is not None:
        where.append("m.created_at >= ?")
        params.append(start)
    if end is not None:
        where.append("m.created_at <= ?")
        params.append(end)
    expr = message_match(query, agent_pk)
    if expr is None:
        sql = (f"SELECT {_HIT_COLUMNS}, 0.0 FROM messages m WHERE {' AND '.join(where)}"
               " ORDER BY m.created_at DESC, m.pk DESC LIMIT ?")
    elif newest is not None:  # the agent's searchable rows inside, the other filters after
        score = f"-{MESSAGE_BM25}" if ranked else "0.0"
        sql = (f"SELECT {_HIT_COLUMNS}, f.score FROM (SELECT m.pk AS pk,"
               f" {score} AS score FROM messages_fts"
               " CROSS JOIN messages m ON m.pk = messages_fts.rowid"
               f" WHERE messages_fts MATCH ? AND {' AND '.join(where[:3])}"
               " ORDER BY messages_fts.rowid DESC LIMIT ?) f"
               " CROSS JOIN messages m ON m.pk = f.pk"
               f" WHERE {' AND '.join(['1', *where[3:]])}"
               f" ORDER BY f.score DESC, {TIE_BREAK} LIMIT ?")
        params[:1] = [unscoped_message_match(query), agent_pk, max(1, int(newest))]
    else:
        sql = (f"SELECT {_HIT_COLUMNS}, -{MESSAGE_BM25} AS score"
               " FROM messages_fts CROSS JOIN messages m ON m.pk = messages_fts.rowid"
               f" WHERE messages_fts MATCH ? AND {' AND '.join(where)}"
               f" ORDER BY score DESC, {TIE_BREAK} LIMIT ?")
        params.insert(0, expr)
    return sql, (*params, limit)


# The neighbouring turns of search hits, for all hits in one statement (core/hit_context.py):
# ? = the hits as a JSON array of [conversation_id, seq], the agent, then `count` twice. For
# each hit, the seq of its count-th turn before and after bound a range read from the
# messages_visible index; fewer turns than `count` on a side leave that side open.
# A turn: a user message, or an assistant message that calls no tool (a call's text is the
# call, not something said), with text.
_TURN = ("visible = 1 AND superseded = 0 AND text <> '' AND (role = 'user' OR (role ="
         " 'assistant' AND json_extract(data, '$.tool_calls') IS NULL))")
NEIGHBOURS_SQL = (
    "WITH h(i, cid, seq) AS (SELECT key, json_extract(value, '$[0]'),"
    " json_extract(value, '$[1]') FROM json_each(?)),"
    " hc AS (SELECT h.i, h.cid, h.seq, c.pk AS cpk FROM h"
    " JOIN conversations c ON c.agent_pk = ? AND c.conversation_id = h.cid),"
    " r AS (SELECT hc.*,"
    f" coalesce((SELECT seq FROM messages WHERE conversation_pk = hc.cpk AND {_TURN}"
    " AND seq < hc.seq ORDER BY seq DESC LIMIT 1 OFFSET ? - 1), -1) AS lo,"
    f" coalesce((SELECT seq FROM messages WHERE conversation_pk = hc.cpk AND {_TURN}"
    " AND seq > hc.seq ORDER BY seq LIMIT 1 OFFSET ? - 1), 1 << 62) AS hi FROM hc)"
    " SELECT r.i, r.cid, m.seq, m.role, m.text, m.created_at, m.fts_name, 0.0 FROM r"
    " JOIN messages m ON m.conversation_pk = r.cpk AND m.seq BETWEEN r.lo AND r.hi"
    " AND m.seq <> r.seq AND m.visible = 1 AND m.superseded = 0 AND m.text <> ''"
    " AND (m.role = 'user' OR (m.role = 'assistant'"
    " AND json_extract(m.data, '$.tool_calls') IS NULL))"
    " ORDER BY r.i, m.seq"
)


def neighbours_params(agent_pk: int, hits: list[tuple[str, int]], count: int) -> tuple:
    return (json.dumps([[cid, seq] for cid, seq in hits], ensure_ascii=False), agent_pk,
            count, count)


def passage_search_sql(
    agent_pk: int, query: str, tags: list[str] | None, top_k: int
) -> tuple[str, tuple]:
    """SELECT (pk, text, tags, created_at, score) for an archival search, like messages."""
    where, params = ["p.agent_pk = ?"], [agent_pk]
    if tags:
        where.append(_HAS_ALL_TAGS)
        params.append(json.dumps(list(tags), ensure_ascii=False))
    columns = "p.pk, p.text, p.tags, p.created_at"
    expr = match_expression(query, agent_pk)
    if expr is None:
        sql = (f"SELECT {columns}, 0.0 FROM passages p WHERE {' AND '.join(where)}"
               " ORDER BY p.pk DESC LIMIT ?")
    else:
        sql = (f"SELECT {columns}, -bm25(passages_fts, 1.0, 0.0) AS score"
               " FROM passages_fts CROSS JOIN passages p ON p.pk = passages_fts.rowid"
               f" WHERE passages_fts MATCH ? AND {' AND '.join(where)}"
               " ORDER BY score DESC, p.created_at DESC, p.pk DESC LIMIT ?")
        params.insert(0, expr)
    return sql, (*params, top_k)


# --- deferred indexing of messages ----------------------------------------------------------
# Indexing a turn's messages inside its commit made FTS5 write a segment per commit and merge
# segments inside whichever commit crossed its threshold: on a 200k-message index every ~30th
# turn's commit took ~15 ms. So a turn's messages are indexed later, in batches: every
# background job of the store (lanes.py, every 100 commits) and, before any search,
# whatever is still pending — a search always sees every committed message.
#
# `fts_progress.upto`: every message with pk <= upto is in the index, none above it is. The
# triggers keep that true: a delete or text update touches the index only for rows at or below
# upto, and a row inserted at or below upto (SQLite reuses the largest pks after a delete) is
# indexed at once (migration 5 created them: store/migrations/v5_constant_time_turn_state.py).

_PENDING = ("SELECT coalesce((SELECT max(pk) FROM messages), 0),"
            " (SELECT upto FROM fts_progress WHERE name = 'messages')")


def pending(db: sqlite3.Connection) -> int:
    """How many committed messages at most wait to be indexed (two index lookups; primary
    keys may have gaps, so this is an upper bound, 0 when none wait)."""
    top, upto = db.execute(_PENDING).fetchone()
    return max(0, top - upto)


def index_pending(db: sqlite3.Connection) -> int:
    """Index every message above the mark, in one segment, and move the mark; the rows
    indexed. Runs inside a write transaction."""
    top, upto = db.execute(_PENDING).fetchone()
    if top <= upto:
        return 0
    count = db.execute("INSERT INTO messages_fts (rowid, text, fts_scope, fts_name)"
                       " SELECT pk, text, fts_scope, fts_name FROM messages WHERE pk > ?",
                       (upto,)).rowcount
    db.execute("UPDATE fts_progress SET upto = ? WHERE name = 'messages'", (top,))
    return count
