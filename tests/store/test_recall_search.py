"""What recall search finds and in which order, on every backend (issue 18, items 5 and 6):
the speaker's `name` is searchable (migration 9, for old rows too), ties are ordered newest
first then by primary key everywhere, the REST search's date window, and the neighbouring
turns of hits read in one query.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from proxy.core.types import NewMessage
from proxy.store.migrations import MIGRATIONS, apply_postgres, apply_sqlite
from tests import store_backends
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend


def named(text: str, name: str, role: str = "user") -> NewMessage:
    return NewMessage({"role": role, "content": text, "name": name})


def test_a_speaker_is_found_by_name(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [named("I went hiking on Sunday", "Caroline")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("Sounds lovely")))
        await s.begin_turn(conv.pk, "t2", "h", None, [named("I painted a lake", "Melanie"),
                                                      user("Caroline is here as well")])
        hits = await s.search_messages(agent.pk, "caroline")
        assert sorted(h.text for h in hits) == ["Caroline is here as well",
                                                "I went hiking on Sunday"]
        found = await s.search_messages(agent.pk, "Melanie")
        assert [(h.text, h.name) for h in found] == [("I painted a lake", "Melanie")]
        assert {h.name for h in await s.search_messages(agent.pk, "")} == {
            None, "Caroline", "Melanie"}
        around = await s.message_neighbours(agent.pk, [("default", 2)], 1)
        assert [(h.seq, h.name) for _, h in around] == [(1, "Caroline"), (3, "Melanie")]
        newest = await s.search_messages(agent.pk, "lake", newest=10)
        assert [h.name for h in newest] == ["Melanie"]
        # the name only adds words: the text is still what is matched and shown
        assert [h.text for h in await s.search_messages(agent.pk, "lake")] == ["I painted a lake"]
        whole = await s.search_agent_messages(agent.pk, "melanie")
        assert [(cid, m.seq) for cid, m, _ in whole] == [("default", 3)]
        assert [m.seq for m, _ in await s.search_conversation(conv.pk, agent.pk, "Melanie")] == [3]
        # a name that is not a string, or JSON with "name" elsewhere, indexes nothing extra
        await s.begin_turn(conv.pk, "t3", "h", None, [
            NewMessage({"role": "user", "content": "odd one", "name": 42}),
            user('the word "name" in quotes')])
        assert [h.text for h in await s.search_messages(agent.pk, "odd")] == ["odd one"]
        assert await s.search_messages(agent.pk, "42") == []

    store_backend.run(body)


def test_ties_are_newest_first_then_by_key_in_every_search(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other = await s.ensure_conversation(agent.pk, "other")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("same words here")] * 3)
        await s.begin_turn(other.pk, "t2", "h", None, [user("same words here")] * 2)
        # conversation 1: seq 1..3 at 100, 300, 300; the other: 200, 300 (pks 4, 5)
        await store_backend.sql(s, "UPDATE messages SET created_at = 100 WHERE pk = 1")
        await store_backend.sql(s, "UPDATE messages SET created_at = 300 WHERE pk IN (2, 3, 5)")
        await store_backend.sql(s, "UPDATE messages SET created_at = 200 WHERE pk = 4")
        want = [5, 3, 2, 4, 1]
        keys = {(c, q): pk for pk, c, q in await store_backend.sql(
            s, "SELECT m.pk, c.conversation_id, m.seq FROM messages m"
               " JOIN conversations c ON c.pk = m.conversation_pk")}
        for limit in (5, 3, 1):
            hits = await s.search_messages(agent.pk, "same words", limit=limit)
            assert len({h.score for h in hits}) == 1
            assert [keys[h.conversation_id, h.seq] for h in hits] == want[:limit]
            rest = await s.search_agent_messages(agent.pk, "same words", limit=limit)
            assert [m.pk for _, m, _ in rest] == want[:limit]
            newest = await s.search_messages(agent.pk, "words", limit=limit, newest=50)
            assert [keys[h.conversation_id, h.seq] for h in newest] == want[:limit]
        for text in ("alpha beta", "alpha beta", "alpha beta"):
            await s.insert_passage(agent.pk, text, [])
        await store_backend.sql(s, "UPDATE passages SET created_at = 7")
        assert [p.pk for p in await s.search_passages(agent.pk, "alpha", top_k=3)] == [3, 2, 1]

    store_backend.run(body)


def test_rest_search_takes_a_date_window(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user(f"trip {i}") for i in range(4)])
        await store_backend.sql(s, "UPDATE messages SET created_at = 1000 * seq")
        found = await s.search_agent_messages(agent.pk, "trip", start=2000, end=3000)
        assert sorted(m.seq for _, m, _ in found) == [2, 3]
        blank = await s.search_agent_messages(agent.pk, "", start=2500)
        assert [m.seq for _, m, _ in blank] == [4, 3]
        assert await s.search_agent_messages(agent.pk, "trip", start=5000) == []

    store_backend.run(body)


def test_the_turns_around_hits_in_one_query(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other = await s.ensure_conversation(agent.pk, "other")
        call = NewMessage({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]})
        await s.begin_turn(conv.pk, "t1", "h", None, [user("u1"), assistant("a1"), user("u2")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": "internal"}, visible=False),
            call, NewMessage({"role": "tool", "tool_call_id": "c1", "content": "output"}),
            assistant("a2")))  # seqs 4-7: hidden, a call without text, a tool result, a2
        await s.begin_turn(conv.pk, "t2", "h", None, [user("u3"), assistant("a3")])  # 8, 9
        await s.begin_turn(other.pk, "t3", "h", None, [user("x1"), user("x2")])
        other_agent, other_conv = await setup(s, "bob")
        await s.begin_turn(other_conv.pk, "t4", "h", None, [user("b1"), user("b2")])

        def shown(rows):
            return [(i, h.conversation_id, h.seq, h.text) for i, h in rows]

        rows = await s.message_neighbours(agent.pk, [("default", 3), ("other", 1)], 1)
        assert shown(rows) == [(0, "default", 2, "a1"), (0, "default", 7, "a2"),
                               (1, "other", 2, "x2")]
        assert rows[0][1].role == "assistant" and rows[0][1].created_at > 0
        rows = await s.message_neighbours(agent.pk, [("default", 7), ("default", 1)], 2)
        assert shown(rows) == [(0, "default", 2, "a1"), (0, "default", 3, "u2"),
                               (0, "default", 8, "u3"), (0, "default", 9, "a3"),
                               (1, "default", 2, "a1"), (1, "default", 3, "u2")]
        # another agent's conversation, an unknown one, no hits, count 0: nothing
        assert await s.message_neighbours(other_agent.pk, [("other", 1)], 1) == []
        assert await s.message_neighbours(agent.pk, [("nope", 1)], 1) == []
        assert await s.message_neighbours(agent.pk, [], 1) == []
        assert await s.message_neighbours(agent.pk, [("default", 3)], 0) == []
        # superseded turns are not neighbours
        await store_backend.sql(s, "UPDATE messages SET superseded = ? WHERE seq = 2",
                                store_backend.name == "postgres" or 1)
        rows = await s.message_neighbours(agent.pk, [("default", 3)], 1)
        assert shown(rows) == [(0, "default", 1, "u1"), (0, "default", 7, "a2")]

    store_backend.run(body)


# --- migration 9 on a database of the previous release --------------------------------------
OLD = [m for m in MIGRATIONS if m.version <= 8]
_OLD_ROWS = [
    "INSERT INTO agents (tenant, agent_id, created_at) VALUES ('t1', 'alice', 0)",
    "INSERT INTO conversations (agent_pk, conversation_id, created_at) VALUES (1, 'default', 0)",
    "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text, created_at)"
    """ VALUES (1, 1, 1, 't', 'user', '{"role": "user", "content": "hi", "name": "Jolene"}',"""
    " 'We adopted a snake', 1)",
    "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text, created_at)"
    """ VALUES (1, 1, 2, 't', 'user', '{"role": "user", "content": "x\\u0000", "name": "Nul"}',"""
    " 'A zero inside', 2)",
]


async def _old_database(backend: Backend) -> None:
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            apply_sqlite(db, OLD)
            for sql in _OLD_ROWS:
                db.execute(sql)
            db.execute("INSERT INTO messages_fts (rowid, text, fts_scope)"  # as release 8 did
                       " SELECT pk, text, fts_scope FROM messages")
            db.execute("UPDATE fts_progress SET upto = 2")
        finally:
            db.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.url)
    try:
        await apply_postgres(conn, OLD)
        for sql in _OLD_ROWS:
            await conn.execute(sql)
    finally:
        await conn.close()


def test_migration_9_indexes_the_names_of_existing_messages(store_backend: Backend) -> None:
    asyncio.run(_old_database(store_backend))

    async def body(s: Any) -> None:
        assert [h.text for h in await s.search_messages(1, "jolene")] == ["We adopted a snake"]
        assert [h.text for h in await s.search_messages(1, "snake")] == ["We adopted a snake"]
        # a \u0000 escape in the JSON: no name indexed on Postgres, the row still searchable
        assert [h.text for h in await s.search_messages(1, "zero")] == ["A zero inside"]
        # old rows stay editable and deletable with the rebuilt index and triggers
        await store_backend.sql(s, "DELETE FROM messages WHERE seq = 2")
        await s.begin_turn(1, "t2", "h", None, [named("a new one", "Jolene")])
        assert sorted(h.seq for h in await s.search_messages(1, "jolene")) == [1, 2]

    store_backend.run(body)

