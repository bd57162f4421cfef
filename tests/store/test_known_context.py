"""Loading a context with what was loaded before (`KnownContext`) gives exactly what a full
load gives, whatever happened in between: new turns, page-outs, regenerates, discarded
turns, and an agent deleted and created again so that its conversation's pk comes back.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import pytest

from proxy.core.types import KnownContext, StoredMessage
from proxy.store import known_context
from proxy.turn.context_cache import ContextCache
from tests import store_backends
from tests.store_backends import Backend, assistant, result, user

store_backend = store_backends.store_backend  # fixture: one run per backend


def _rows(context: list[StoredMessage]) -> list[dict[str, Any]]:
    return [asdict(m) for m in context]


async def _check(s: Any, agent_pk: int, conv_pk: int, known: KnownContext | None):
    """Load with and without `known`; both must agree. Returns the new KnownContext."""
    cached = await s.load_turn_state(agent_pk, conv_pk, known)
    fresh = await s.load_turn_state(agent_pk, conv_pk)
    assert _rows(cached.context) == _rows(fresh.context)
    assert cached.epoch == fresh.epoch
    return KnownContext(cached.epoch, cached.conversation.created_at, tuple(cached.context),
                        cached.left_context)


@pytest.mark.parametrize("seed", range(6))
def test_a_known_context_loads_the_same_as_a_full_load(store_backend: Backend, seed: int):
    rng = random.Random(seed)

    async def body(s: Any) -> None:
        agent = await s.ensure_agent("t", "a", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        known: KnownContext | None = None
        for n in range(40):
            action = rng.choice(["turn", "turn", "turn", "evict", "regenerate", "discard",
                                 "replace_agent", "unanswered"])
            state = await s.load_turn_state(agent.pk, conv.pk)
            seqs = [m.seq for m in state.context]
            if action == "turn" or (not seqs and action != "replace_agent"):
                await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user(f"q{n}")])
                await s.finish_turn(f"t{n}", conv.pk, agent.pk, result(assistant(f"a{n}")))
            elif action == "unanswered":
                await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user(f"q{n}")])
            elif action == "evict":
                await s.evict_messages(conv.pk, rng.choice(seqs), f"summary {n}")
            elif action == "regenerate":
                await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user(f"again {n}")],
                                   supersede_from_seq=rng.choice(seqs))
            elif action == "discard":
                await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user(f"bad {n}")])
                await s.discard_turn(f"t{n}", {"status": 400})
            else:  # the agent goes and comes back: its conversation's pk may be reused
                await s.delete_agent(agent.pk)
                agent = await s.ensure_agent("t", "a", [])
                conv = await s.ensure_conversation(agent.pk, "c")
                await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user(f"new {n}")])
            known = await _check(s, agent.pk, conv.pk, known)

    store_backend.run(body)


def test_deleting_a_conversation_bumps_the_epoch(store_backend: Backend):
    async def body(s: Any) -> list[int]:
        agent = await s.ensure_agent("t", "a", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        epochs = [(await s.load_turn_state(agent.pk, conv.pk)).epoch]
        other = await s.ensure_agent("t", "b", [])
        await s.ensure_conversation(other.pk, "c")
        await s.delete_agent(other.pk)  # a cascade deletes its conversation
        epochs.append((await s.load_turn_state(agent.pk, conv.pk)).epoch)
        return epochs

    first, second = store_backend.run(body)
    assert second > first


def test_merge_needs_the_seqs_left_when_the_count_differs():
    message = StoredMessage(seq=3, data={"role": "user", "content": "x"}, turn_id="t",
                            created_at=0.0)
    known = KnownContext(0, 0.0, (message,))
    assert known_context.merge(known, 1, []) == [message]
    assert known_context.merge(known, set(), []) == []
    with pytest.raises(ValueError):
        known_context.merge(known, 0, [])


def _known(n: int) -> KnownContext:
    return KnownContext(0, 0.0, tuple(
        StoredMessage(seq=i, data={}, turn_id="t", created_at=0.0) for i in range(n)))


def test_the_cache_keeps_the_most_recently_used_within_its_message_budget():
    cache = ContextCache(max_messages=10)
    cache.put(1, _known(4))
    cache.put(2, _known(4))
    assert cache.get(1) is not None  # 1 is now the most recently used
    cache.put(3, _known(4))  # over budget: 2 goes
    assert (cache.get(2), len(cache), cache.messages) == (None, 2, 8)
    cache.put(1, _known(2))  # replacing an entry releases its old size
    assert cache.messages == 6
    cache.put(4, _known(11))  # larger than the whole budget: not kept
    assert cache.get(4) is None and cache.messages == 6
    cache.forget(3)
    assert (len(cache), cache.messages) == (1, 2)
    disabled = ContextCache(max_messages=0)
    disabled.put(1, _known(0))  # an empty context costs nothing
    disabled.put(2, _known(1))
    assert disabled.get(2) is None


# --- the other per-turn count: archival passages, kept on the agent row --------------------
def test_the_passage_counter_follows_every_way_passages_come_and_go(store_backend: Backend):
    async def body(s: Any) -> list[int]:
        agent = await s.ensure_agent("t", "a", [])
        other = await s.ensure_agent("t", "b", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        seen = []

        async def count() -> None:
            state = await s.load_turn_state(agent.pk, conv.pk)
            assert state.archival_passages == await s.count_passages(agent.pk)
            seen.append(state.archival_passages)

        await count()
        first = await s.insert_passage(agent.pk, "one", [])
        await s.insert_passage(other.pk, "someone else's", [])
        await count()
        await s.begin_turn(conv.pk, "t1", "h", None, [user("remember two things")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            assistant("done"), passages=[("two", ["x"]), ("three", [])]))
        await count()
        await s.delete_passage(agent.pk, first.pk)
        await count()
        dump = await s.export_agent(agent.pk)
        await s.delete_agent(agent.pk)
        assert await s.count_passages(agent.pk) == 0
        agent = await s.import_agent("t", "a", dump)
        conv = await s.ensure_conversation(agent.pk, "c")
        await count()
        seen.append(await s.count_passages(other.pk))
        return seen

    assert store_backend.run(body) == [0, 1, 3, 2, 2, 1]


def test_migration_5_counts_the_passages_already_stored(tmp_path):
    import sqlite3

    from proxy.store.migrations import MIGRATIONS, apply_sqlite
    from proxy.store.sqlite.store import SQLiteStore

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    apply_sqlite(db, [m for m in MIGRATIONS if m.version < 5])  # a database from before v5
    db.execute("INSERT INTO agents (tenant, agent_id, created_at) VALUES ('t', 'a', 0)")
    db.executemany("INSERT INTO passages (agent_pk, text, tags, created_at) VALUES (1, ?, '[]', 0)",
                   [(f"p{i}",) for i in range(7)])
    db.close()

    async def body(s: Any) -> int:
        return await s.count_passages(1)

    assert store_backends.run_with_store(SQLiteStore(str(path)), body) == 7
