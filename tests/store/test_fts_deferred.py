"""SQLite full-text indexing of messages happens in batches, off the turn's commit (fts.py).

The invariant: every message with pk <= fts_progress.upto is in the index, none above it.
FTS5's own integrity check with rank 1 compares the index with the content table row by row,
so it fails on a row indexed twice, missing, or indexed with old text.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3

import pytest

from proxy.core.types import NewMessage
from proxy.store.migrations import MIGRATIONS, apply_sqlite
from proxy.store.sqlite.fts import index_pending, pending
from proxy.store.sqlite.store import SQLiteStore
from tests.store_backends import assistant, result, user


def run(coro):
    return asyncio.run(coro)


def _check_index(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")


async def _integrity(store: SQLiteStore) -> None:
    await store.lanes.write(lambda db: _check_index(db))


async def _opened(path, *agent_ids: str) -> tuple[SQLiteStore, list]:
    """An open store with an agent and a conversation "c" for each id: [(agent, conv)]."""
    store = SQLiteStore(str(path))
    await store.open()
    pairs = []
    for agent_id in agent_ids:
        agent = await store.ensure_agent("t", agent_id, [])
        pairs.append((agent, await store.ensure_conversation(agent.pk, "c")))
    return store, pairs


def test_a_search_right_after_a_turn_finds_it_with_nothing_indexed_in_between(tmp_path):
    async def main():
        store, [(agent, conv)] = await _opened(tmp_path / "s.db", "a")
        await store.begin_turn(conv.pk, "t1", "h", None, [user("the walrus lives in Tromsø")])
        await store.finish_turn("t1", conv.pk, agent.pk, result(assistant("noted, a walrus")))
        waiting = await store.lanes.read_fast(pending)
        hits = [h.text for h in await store.search_messages(agent.pk, "walrus")]
        waiting_after = await store.lanes.read_fast(pending)
        await _integrity(store)
        await store.close()
        return waiting, sorted(hits), waiting_after

    assert run(main()) == (2, ["noted, a walrus", "the walrus lives in Tromsø"], 0)


def test_a_large_backlog_is_indexed_off_the_loop_and_found(tmp_path):
    """More rows waiting than the fast lane takes (FAST_INDEX_ROWS): the search indexes them
    on the thread lane and still finds every one."""
    from proxy.store.sqlite.store import FAST_INDEX_ROWS

    async def main():
        store, [(agent, conv)] = await _opened(tmp_path / "big.db", "a")
        many = [user(f"otter number {n}") for n in range(FAST_INDEX_ROWS + 8)]
        await store.begin_turn(conv.pk, "t1", "h", None, many)
        fast_before = store.lanes.batches
        waiting = await store.lanes.read_fast(pending)
        hits = await store.search_messages(agent.pk, "otter", limit=100)
        waiting_after = await store.lanes.read_fast(pending)
        await _integrity(store)
        await store.close()
        return waiting > FAST_INDEX_ROWS, len(hits), waiting_after, store.lanes.batches - fast_before

    assert run(main()) == (True, FAST_INDEX_ROWS + 8, 0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_the_index_matches_the_messages_whatever_happens_in_between(tmp_path, seed):
    """Turns, text edits, agents deleted (cascades) and re-created (SQLite then reuses the
    largest pks, some below the mark), batches at random points: afterwards the index is
    exactly the content, and every message is found by a word of its own."""
    rng = random.Random(seed)

    async def main():
        store = SQLiteStore(str(tmp_path / f"r{seed}.db"))
        await store.open()
        agents = {}
        for step in range(60):
            name = rng.choice("abc")
            if name not in agents:
                agent = await store.ensure_agent("t", name, [])
                agents[name] = (agent, await store.ensure_conversation(agent.pk, "c"))
            agent, conv = agents[name]
            action = rng.random()
            if action < 0.55:
                said = NewMessage({"role": "user", "content": f"said{step}", "name": f"name{step}"})
                await store.begin_turn(conv.pk, f"t{step}", "h", None,
                                       [user(f"word{step} q"), said])
                await store.finish_turn(f"t{step}", conv.pk, agent.pk,
                                        result(assistant(f"word{step} a")))
            elif action < 0.7:
                await store.lanes.write(lambda db, s=step: db.execute(
                    "UPDATE messages SET text = ? WHERE pk = (SELECT max(pk) FROM messages)",
                    (f"edited{s}",)))
            elif action < 0.75:  # a speaker renamed: the name is indexed from `data`
                await store.lanes.write(lambda db, s=step: db.execute(
                    "UPDATE messages SET data = json_set(data, '$.name', ?)"
                    " WHERE pk = (SELECT max(pk) FROM messages)", (f"renamed{s}",)))
            elif action < 0.85:
                await store.delete_agent(agent.pk)
                del agents[name]
            else:
                await store.lanes.write(index_pending)
        await store.lanes.write(index_pending)
        await _integrity(store)
        rows = await store.lanes.read(lambda db: db.execute(
            "SELECT m.agent_pk, m.text, m.fts_name, m.pk FROM messages m").fetchall())
        for agent_pk, text, name, pk in rows:
            for word in (text.split()[0], name):
                if word is None:
                    continue
                found = await store.search_messages(agent_pk, word, limit=50)
                assert text in [h.text for h in found], (word, text, pk)
        await store.close()
        return len(rows)

    assert run(main()) > 0


def test_migration_5_marks_the_messages_already_indexed(tmp_path):
    """A database from before v5 indexed every message in its commit: all of them count as
    indexed, and later deletes and batches keep the index exact."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    apply_sqlite(db, [m for m in MIGRATIONS if m.version < 5])
    db.execute("INSERT INTO agents (tenant, agent_id, created_at) VALUES ('t', 'a', 0)")
    db.execute("INSERT INTO conversations (agent_pk, conversation_id, created_at)"
               " VALUES (1, 'c', 0)")
    for seq in (1, 2, 3):
        db.execute("INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data,"
                   " text, created_at) VALUES (1, 1, ?, 't', 'user', '{}', ?, 0)",
                   (seq, f"old{seq} words"))
    db.execute("INSERT INTO messages_fts (rowid, text, fts_scope)"
               " SELECT pk, text, fts_scope FROM messages")  # what v4 did in the commit
    db.close()

    async def main():
        store = SQLiteStore(str(path))
        await store.open()
        upto = await store.lanes.read(lambda d: d.execute(
            "SELECT upto FROM fts_progress").fetchone()[0])
        await store.lanes.write(lambda d: d.execute("DELETE FROM messages WHERE seq = 3"))
        await store.begin_turn(1, "t2", "h", None, [user("new words")])
        hits = sorted(h.text for h in await store.search_messages(1, "words"))
        await _integrity(store)
        await store.close()
        return upto, hits

    assert run(main()) == (3, ["new words", "old1 words", "old2 words"])


def test_the_background_job_indexes_what_turns_wrote(tmp_path):
    async def main():
        store, [(agent, conv)] = await _opened(tmp_path / "b.db", "a")
        store.lanes.checkpoint_every = 4
        for n in range(2):  # four commits: the job starts
            await store.begin_turn(conv.pk, f"t{n}", "h", None, [user(f"q{n}")])
            await store.finish_turn(f"t{n}", conv.pk, agent.pk, result(assistant(f"a{n}")))
        await store.lanes.wait_checkpoint()
        waiting = await store.lanes.read_fast(pending)
        await _integrity(store)
        await store.close()
        return waiting

    assert run(main()) == 0


def test_a_reused_pk_below_the_mark_is_indexed_in_its_own_commit(tmp_path):
    async def main():
        store, [(keep, keep_conv), (gone, gone_conv)] = await _opened(
            tmp_path / "reuse.db", "keep", "gone")
        await store.begin_turn(keep_conv.pk, "k1", "h", None, [user("kept words")])
        await store.begin_turn(gone_conv.pk, "g1", "h", None, [user("doomed one"),
                                                                 user("doomed two")])
        await store.lanes.write(index_pending)  # the mark is now the largest pk
        top = await store.lanes.read(lambda d: d.execute("SELECT max(pk) FROM messages")
                                     .fetchone()[0])
        await store.delete_agent(gone.pk)  # frees the two largest pks
        await store.begin_turn(keep_conv.pk, "k2", "h", None, [user("fresh words")])
        reused = await store.lanes.read(lambda d: d.execute(
            "SELECT pk FROM messages WHERE text = 'fresh words'").fetchone()[0])
        waiting = await store.lanes.read_fast(pending)
        await _integrity(store)
        hits = sorted(h.text for h in await store.search_messages(keep.pk, "words"))
        await store.close()
        return reused <= top, waiting, hits

    assert run(main()) == (True, 0, ["fresh words", "kept words"])
