"""The `Store` contract, run against every backend (SQLite and Postgres), plus the tests that
only make sense on Postgres. SQLite-only tests (PRAGMAs, FTS5, query plans) stay in
test_sqlite_store.py.

No pytest-asyncio: each test runs its own event loop through `store_backend.run(body)`. The
Postgres database is fresh for every test (see tests/store_backends.py); if Postgres cannot be
reached the Postgres variants skip, saying how to run them, unless MEMPROXY_REQUIRE_POSTGRES=1
(CI) makes them fail (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import pytest

from proxy.core.types import Block, NewMessage, TurnResult
from proxy.store import open_store
from tests import store_backends
from tests.store_backends import DEFAULT_BLOCKS, Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend
postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database







# --- agents, blocks, conversations ------------------------------------------------------
def test_ensure_agent_and_conversation_races(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agents = await asyncio.gather(*(s.ensure_agent("t", "a", DEFAULT_BLOCKS)
                                        for _ in range(20)))
        assert len({a.pk for a in agents}) == 1
        assert [b.label for b in await s.get_blocks(agents[0].pk)] == ["persona", "human"]
        assert len(await s.list_agents_page("t")) == 1
        convs = await asyncio.gather(*(s.ensure_conversation(agents[0].pk, "c")
                                       for _ in range(20)))
        assert len({c.pk for c in convs}) == 1
        assert len(await s.list_conversation_stats(agents[0].pk)) == 1
        # an existing agent is returned as is: no second set of blocks
        again = await s.ensure_agent("t", "a", [Block("other")])
        assert again.pk == agents[0].pk
        assert [b.label for b in await s.get_blocks(again.pk)] == ["persona", "human"]
        assert again == (await s.list_agents_page(None))[0]

    store_backend.run(body)


def test_tenant_separation_and_settings(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        a = await s.ensure_agent("A", "alice", DEFAULT_BLOCKS)
        b = await s.ensure_agent("B", "alice", [Block("persona", "B's")])
        assert a.pk != b.pk and (a.tenant, b.tenant) == ("A", "B")
        assert a.settings == {} and a.created_at <= time.time()
        assert [x.pk for x in await s.list_agents_page("A")] == [a.pk]
        assert [x.pk for x in await s.list_agents_page(None)] == [a.pk, b.pk]
        assert (await s.get_agent("B", "alice")).pk == b.pk
        assert await s.get_agent("C", "alice") is None
        assert (await s.get_blocks(b.pk))[0].value == "B's"
        await s.update_agent_settings(a.pk, {"model": "gpt", "ünï": [1]})
        assert (await s.get_agent("A", "alice")).settings == {"model": "gpt", "ünï": [1]}

    store_backend.run(body)


def test_blocks_order_and_upsert(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.write_block(agent.pk, Block("persona", "new", "desc", 100, True), source="api")
        await s.write_block(agent.pk, Block("notes", "n"), source="api")
        blocks = await s.get_blocks(agent.pk)
        assert [b.label for b in blocks] == ["persona", "human", "notes"]
        assert (blocks[0].value, blocks[0].description, blocks[0].limit,
                blocks[0].read_only) == ("new", "desc", 100, True)
        assert all(b.updated_at for b in blocks)
        # one turn writing the same label twice: the last value wins, at the first's place
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("ok"), blocks=[
            Block("todo", "first"), Block("human", "h2"), Block("todo", "second")]))
        blocks = await s.get_blocks(agent.pk)
        assert [(b.label, b.value) for b in blocks] == [
            ("persona", "new"), ("human", "h2"), ("notes", "n"), ("todo", "second")]

    store_backend.run(body)


def test_conversation_updates_and_eviction(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert (conv.summary, conv.resends_history) == ("", None)
        await s.update_conversation(conv.pk, resends_history=True)
        await s.begin_turn(conv.pk, "t1", "h", None, [user(f"m{i}") for i in range(5)])
        assert await s.evict_messages(conv.pk, 3, "summary of 1-3") == 3
        conv = await s.get_conversation(agent.pk, "default")
        assert (conv.summary, conv.resends_history) == ("summary of 1-3", True)
        assert [m.seq for m in await s.context_messages(conv.pk)] == [4, 5]
        assert len(await s.visible_transcript(conv.pk)) == 5
        assert await s.get_conversation(agent.pk, "nope") is None
        # evicting again counts only what was still in context; the summary is replaced
        assert await s.evict_messages(conv.pk, 4, "summary of 1-4") == 1
        assert await s.evict_messages(conv.pk, 4, "same") == 0
        assert (await s.get_conversation(agent.pk, "default")).summary == "same"
        assert await s.count_messages(agent.pk) == 5  # evicted messages stay in recall
        await s.update_conversation(conv.pk, resends_history=False)
        await s.update_conversation(conv.pk)  # nothing to change
        conv = await s.get_conversation(agent.pk, "default")
        assert (conv.summary, conv.resends_history) == ("same", False)
        await s.update_conversation(conv.pk, summary="")
        assert (await s.get_conversation(agent.pk, "default")).summary == ""

    store_backend.run(body)


# --- turns and messages ------------------------------------------------------------------
def test_turn_lifecycle(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h1", "idem-1", [user("hi"), user("there")])
        turn = await s.last_turn(conv.pk)
        assert (turn.turn_id, turn.status, turn.first_seq, turn.response) == ("t1", "open", 1, None)
        assert (turn.conversation_pk, turn.request_hash, turn.idempotency_key) == (
            conv.pk, "h1", "idem-1")
        step = NewMessage({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "core_memory_append", "arguments": "{\"label\":\"human\"}"}}]},
            visible=False, tokens=12, visible_hash="vh")
        tool = NewMessage({"role": "tool", "tool_call_id": "c1", "content": "ok"}, visible=False)
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            step, tool, assistant("hello ✓"), blocks=[Block("human", "likes tea")],
            passages=[("fact", ["t"])], response={"id": "x", "choices": []}))
        turn = await s.find_turn(conv.pk, idempotency_key="idem-1")
        assert (turn.status, turn.response) == ("done", {"id": "x", "choices": []})
        msgs = await s.list_messages(conv.pk)
        assert [m.seq for m in msgs] == [1, 2, 3, 4, 5]
        assert msgs[2].data == step.data and msgs[2].tokens == 12 and not msgs[2].visible
        assert msgs[2].visible_hash == "vh" and msgs[2].role == "assistant"
        assert msgs[0].turn_id == "t1" and msgs[0].pk is not None and msgs[0].in_context
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 3, 4, 5]
        assert (await s.get_blocks(agent.pk))[1].value == "likes tea"
        assert [p.text for p in await s.list_passages_page(agent.pk)] == ["fact"]
        with pytest.raises(LookupError):  # finishing twice never stores output twice
            await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("again")))
        with pytest.raises(LookupError):  # unknown turn
            await s.finish_turn("nope", conv.pk, agent.pk, result(assistant("again")))
        assert len(await s.list_messages(conv.pk)) == 5

        # no inputs: first_seq is the next free seq; fail and reopen
        await s.begin_turn(conv.pk, "t2", "h2", None, [])
        assert (await s.last_turn(conv.pk)).first_seq == 6
        await s.fail_turn("t2", {"message": "upstream down"})
        assert (await s.last_turn(conv.pk)).status == "failed"
        await s.reopen_turn("t2")
        assert (await s.last_turn(conv.pk)).status == "open"
        await s.fail_turn("t1", {"message": "late"})  # a done turn stays done
        assert (await s.find_turn(conv.pk, idempotency_key="idem-1")).status == "done"
        await s.reopen_turn("t1")  # only failed turns reopen
        assert (await s.find_turn(conv.pk, idempotency_key="idem-1")).status == "done"
        await s.fail_turn("t2", {"message": "again"})
        await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("late reply")))
        assert (await s.last_turn(conv.pk)).status == "done"  # a failed turn can finish
        assert [m.seq for m in await s.list_messages(conv.pk)] == [1, 2, 3, 4, 5, 6]

        # find_turn: newest by key, else newest by hash
        await s.begin_turn(conv.pk, "t3", "h1", None, [user("again")])
        assert (await s.find_turn(conv.pk, request_hash="h1")).turn_id == "t3"
        assert (await s.find_turn(conv.pk, idempotency_key="idem-1",
                                  request_hash="h1")).turn_id == "t1"
        assert await s.find_turn(conv.pk, idempotency_key="nope") is None
        assert await s.find_turn(conv.pk) is None
        assert await s.last_turn(conv.pk + 1000) is None
        with pytest.raises(LookupError):  # no such conversation
            await s.begin_turn(conv.pk + 1000, "t4", "h", None, [user("x")])

    store_backend.run(body)


def test_discard_turn(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("kept question")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("kept answer")))
        await s.begin_turn(conv.pk, "t2", "h", None, [user("rejected"), user("input")])
        await s.discard_turn("t2", {"message": "invalid request"})
        turn = await s.last_turn(conv.pk)
        assert (turn.turn_id, turn.status) == ("t2", "failed")
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2]
        everything = await s.list_messages(conv.pk, include_superseded=True)
        assert [(m.seq, m.superseded, m.in_context) for m in everything] == [
            (1, False, True), (2, False, True), (3, True, False), (4, True, False)]
        assert await s.count_messages(agent.pk) == 2
        assert await s.search_messages(agent.pk, "rejected") == []
        # a done turn is not discarded; an unknown one is ignored
        await s.discard_turn("t1", {"message": "late"})
        await s.discard_turn("nope", {"message": "x"})
        assert (await s.find_turn(conv.pk, request_hash="h")).turn_id == "t2"
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2]
        # the next turn continues after the discarded seqs
        await s.begin_turn(conv.pk, "t3", "h", None, [user("retry")])
        assert (await s.last_turn(conv.pk)).first_seq == 5

    store_backend.run(body)


def test_list_messages_paging_and_supersede(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("question one")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("answer one")))
        await s.begin_turn(conv.pk, "t2", "h", None, [user("question two")])
        await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("answer two")))
        assert await s.count_messages(agent.pk) == 4
        page = await s.list_messages(conv.pk, after_seq=1, limit=2)
        assert [m.seq for m in page] == [2, 3]

        # regenerate the second reply after an edit: supersede from seq 3
        await s.begin_turn(conv.pk, "t3", "h", None, [user("question two, edited")],
                           supersede_from_seq=3)
        assert (await s.last_turn(conv.pk)).first_seq == 5
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.list_messages(conv.pk)] == [1, 2, 5]
        everything = await s.list_messages(conv.pk, include_superseded=True)
        assert [(m.seq, m.superseded, m.in_context) for m in everything][2:] == [
            (3, True, False), (4, True, False), (5, False, True)]
        assert await s.count_messages(agent.pk) == 3
        assert {h.seq for h in await s.search_messages(agent.pk, "answer two")} == {2, 5}

    store_backend.run(body)


def test_list_messages_newest_first_and_before(store_backend: Backend) -> None:
    """The inspector opens a transcript at its end: newest first, paged back by seq."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        for i in range(3):
            await s.begin_turn(conv.pk, f"t{i}", "h", None, [user(f"question {i}")])
            await s.finish_turn(f"t{i}", conv.pk, agent.pk, result(assistant(f"answer {i}")))
        newest = await s.list_messages(conv.pk, limit=2, newest_first=True)
        assert [m.seq for m in newest] == [6, 5]
        older = await s.list_messages(conv.pk, limit=3, newest_first=True, before_seq=5)
        assert [m.seq for m in older] == [4, 3, 2]
        assert [m.seq for m in await s.list_messages(conv.pk, before_seq=3)] == [1, 2]
        assert [m.seq for m in await s.list_messages(conv.pk, after_seq=2, before_seq=5)] == [3, 4]
        # a regenerate supersedes seq 6: hidden unless asked for, in both orders
        await s.begin_turn(conv.pk, "t9", "h", None, [user("question 2, edited")],
                           supersede_from_seq=5)
        assert [m.seq for m in await s.list_messages(conv.pk, newest_first=True)] == [7, 4, 3, 2, 1]
        assert [m.seq for m in await s.list_messages(
            conv.pk, newest_first=True, include_superseded=True, limit=3)] == [7, 6, 5]

    store_backend.run(body)


def test_concurrent_begin_turns_get_consecutive_seqs(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent = await s.ensure_agent("t", "a", DEFAULT_BLOCKS)
        convs = [await s.ensure_conversation(agent.pk, f"c{i}") for i in range(8)]

        async def turns(conv_pk: int, n: int, tag: str) -> None:
            for k in range(n):
                await s.begin_turn(conv_pk, f"{tag}-{k}", "h", None, [user("a"), user("b")])
                await s.finish_turn(f"{tag}-{k}", conv_pk, agent.pk, result(assistant("c")))

        await asyncio.gather(*(turns(c.pk, 5, f"{c.pk}-{w}") for c in convs for w in range(2)))
        for c in convs:
            msgs = await s.list_messages(c.pk, limit=1000)
            assert [m.seq for m in msgs] == list(range(1, 31))
            by_turn: dict[str, list[int]] = {}
            for m in msgs:
                by_turn.setdefault(m.turn_id, []).append(m.seq)
            assert len(by_turn) == 10
            for seqs in by_turn.values():  # a turn's inputs are consecutive, its reply later
                assert seqs[1] == seqs[0] + 1 and seqs[2] > seqs[1]
        assert await s.count_messages(agent.pk) == 8 * 30

    store_backend.run(body)


def test_transactions_are_atomic(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        bad_message = NewMessage({"role": "assistant", "content": object()})
        with pytest.raises(TypeError):
            await s.finish_turn("t1", conv.pk, agent.pk,
                                result(assistant("first"), bad_message, assistant("third")))
        # fails after messages and blocks: bad passage tags
        with pytest.raises(TypeError):
            await s.finish_turn("t1", conv.pk, agent.pk, result(
                assistant("ok"), blocks=[Block("human", "changed")],
                passages=[("good", ["x"]), ("bad", [object()])]))
        assert [m.seq for m in await s.list_messages(conv.pk)] == [1]
        assert (await s.last_turn(conv.pk)).status == "open"
        assert (await s.get_blocks(agent.pk))[1].value == ""
        assert await s.count_passages(agent.pk) == 0
        assert await s.count_messages(agent.pk) == 1
        assert await s.search_messages(agent.pk, "first ok") == []
        # begin_turn: a duplicate turn id fails after the supersede; nothing is kept
        with pytest.raises(store_backend.integrity_error):
            await s.begin_turn(conv.pk, "t1", "h", None, [user("x")], supersede_from_seq=1)
        assert [(m.seq, m.superseded) for m in await s.list_messages(
            conv.pk, include_superseded=True)] == [(1, False)]
        assert await s.count_messages(agent.pk) == 1
        # the store is usable afterwards
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("fine")))
        assert len(await s.list_messages(conv.pk)) == 2

    store_backend.run(body)


def test_cancelled_call_leaves_all_or_nothing(store_backend: Backend) -> None:
    """A caller cancelled mid-write (a client that disconnects) never leaves half a turn, and
    the store keeps working."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        task = asyncio.create_task(s.begin_turn(
            conv.pk, "big", "h", None, [user(f"bulk message {i}") for i in range(20_000)]))
        await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # (SQLite may still commit the cancelled call's transaction on its worker thread: the
        # next write queues behind it.)
        await s.begin_turn(conv.pk, "next", "h", None, [user("after")])
        msgs = await s.list_messages(conv.pk, limit=100_000)
        bulk = [m for m in msgs if m.turn_id == "big"]
        assert len(bulk) in (0, 20_000)
        assert (await s.find_turn(conv.pk, request_hash="h")).turn_id == "next"
        assert (await s.last_turn(conv.pk)).first_seq == len(bulk) + 1
        assert [m.seq for m in msgs] == list(range(1, len(bulk) + 2))
        assert await s.count_messages(agent.pk) == len(bulk) + 1

    store_backend.run(body)


# --- search ----------------------------------------------------------------------------
def test_passage_search_ranking_tags_and_crud(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        other, _ = await setup(s, "bob")
        p1 = await s.insert_passage(agent.pk, "The cat sat on the mat.", ["pets", "cat"])
        p2 = await s.insert_passage(agent.pk, "Dogs love bones; my dog buries bones.", ["pets"])
        p3 = await s.insert_passage(agent.pk, "A bone-dry summer.", ["weather"])
        await s.insert_passage(other.pk, "dog bones dog bones", ["pets"])
        assert (p1.text, p1.tags, p1.score) == ("The cat sat on the mat.", ["pets", "cat"], None)
        hits = await s.search_passages(agent.pk, "dog bones")
        assert [h.pk for h in hits] == [p2.pk, p3.pk]
        assert hits[0].score > hits[1].score > 0
        assert (hits[0].text, hits[0].tags) == (p2.text, ["pets"])
        assert [h.pk for h in await s.search_passages(agent.pk, "bones", tags=["weather"])] == [p3.pk]
        assert [h.pk for h in await s.search_passages(agent.pk, "", tags=["pets", "cat"])] == [p1.pk]
        assert await s.search_passages(agent.pk, "cat", tags=["pets", "nope"]) == []
        assert [h.pk for h in await s.search_passages(agent.pk, "bones", top_k=1)] == [p2.pk]
        blank = await s.search_passages(agent.pk, "  ", top_k=2)
        assert [h.pk for h in blank] == [p3.pk, p2.pk] and {h.score for h in blank} == {0.0}
        assert await s.count_passages(agent.pk) == 3
        assert [p.pk for p in await s.list_passages_page(agent.pk, limit=2, offset=1)] == [
            p2.pk, p1.pk]  # newest first
        assert {p.score for p in await s.list_passages_page(agent.pk)} == {None}
        assert await s.delete_passage(other.pk, p1.pk) is False  # not bob's
        assert await s.delete_passage(agent.pk, p1.pk) is True
        assert await s.delete_passage(agent.pk, p1.pk) is False
        assert await s.search_passages(agent.pk, "cat mat") == []
        assert await s.count_passages(agent.pk) == 2

    store_backend.run(body)


def test_message_search_ranking_roles_dates_and_scope(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        conv2 = await s.ensure_conversation(agent.pk, "second")
        other, other_conv = await setup(s, "bob")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("I adopted a puppy named Rex")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": "secret internal puppy"}, visible=False),
            assistant("Congratulations on the puppy! Puppy training tips: be patient.")))
        await s.begin_turn(conv2.pk, "t2", "h", None, [user("What's the weather like?")])
        await s.begin_turn(other_conv.pk, "t3", "h", None, [user("puppy puppy puppy")])
        await store_backend.sql(
            s, "UPDATE messages SET created_at = 1000 + seq * 100 + conversation_pk")

        hits = await s.search_messages(agent.pk, "puppy")
        assert [(h.conversation_id, h.seq, h.role) for h in hits] == [
            ("default", 3, "assistant"), ("default", 1, "user")]
        assert hits[0].score > hits[1].score > 0 and "training" in hits[0].text
        assert hits[1].text == "I adopted a puppy named Rex"
        assert hits[1].created_at == 1000 + 100 + conv.pk
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", roles=["user"])] == [1]
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", limit=1)] == [3]
        # created_at: default conv seq1=1101, seq3=1301; second conv seq1=1102
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", start=1301)] == [3]
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", end=1101)] == [1]
        assert await s.search_messages(agent.pk, "puppy", start=1102, end=1300) == []
        blank = await s.search_messages(agent.pk, "")
        assert [(h.conversation_id, h.seq) for h in blank] == [
            ("default", 3), ("second", 1), ("default", 1)]
        assert {h.score for h in blank} == {0.0}
        assert [h.seq for h in await s.search_messages(agent.pk, " ", roles=["assistant"])] == [3]
        assert [h.conversation_id for h in await s.search_messages(
            agent.pk, "", start=1102, end=1102)] == ["second"]
        assert await s.search_messages(agent.pk, "weather puppy", roles=["tool"]) == []
        assert await s.count_messages(agent.pk) == 3
        assert await s.count_messages(other.pk) == 1
        assert await s.count_messages(other.pk + 1000) == 0

    store_backend.run(body)


HOSTILE = ['"', '""', '*', 'NEAR(', 'NEAR(a b', '-', '-puppy', 'a AND', 'OR', 'NOT', '^',
           '(', ')', ':', 'text:', 'fts_scope:a1', "puppy's \"rex\"", '{text}', '\\', "'",
           'ünïcödé 日本語 🐶', '', '   ', '\x00', 'a' * 5000, 'a1', '!', '&', '|', '<->',
           'puppy & !rex', "'puppy':*", 'or or or', 'puppy <-> rex', '$1', '%s', '--', '/*',
           ' '.join(f'w{i}' for i in range(200))]


def test_fts_hostile_input_never_errors(store_backend: Backend) -> None:
    """FTS syntax in the query is just words (or nothing): never an error, never a leak."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, _ = await setup(s, "bob")
        await s.begin_turn(conv.pk, "t", "h", None, [user("puppy rex ünïcödé 日本語 🐶")])
        await s.insert_passage(agent.pk, "puppy rex", ["x"])
        await s.insert_passage(other.pk, "puppy rex", ["x"])
        failures = []
        for query in HOSTILE:
            try:
                for hit in await s.search_messages(agent.pk, query, roles=["user"]):
                    assert hit.seq == 1
                for passage in await s.search_passages(agent.pk, query, tags=["x"]):
                    assert passage.text == "puppy rex"
                assert len(await s.search_passages(other.pk, query)) <= 1
            except Exception as exc:  # collect every failing input, not just the first
                failures.append((query[:40], repr(exc)))
        assert failures == []
        assert len(await s.search_messages(agent.pk, "-puppy")) == 1  # not a negation
        assert len(await s.search_passages(agent.pk, "NOT rex")) == 1

    store_backend.run(body)


def test_fts_stemming_diacritics_and_case(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        await s.insert_passage(agent.pk, "A naïve café in Zürich", [])
        await s.insert_passage(agent.pk, "running quickly", [])
        assert len(await s.search_passages(agent.pk, "naive cafe")) == 1
        assert len(await s.search_passages(agent.pk, "NAÏVE")) == 1
        assert len(await s.search_passages(agent.pk, "ZURICH")) == 1
        assert len(await s.search_passages(agent.pk, "runs")) == 1  # stemming
        # nothing but the text is searchable (no scope token, no tag)
        assert await s.search_passages(agent.pk, f"a{agent.pk}") == []
        await s.insert_passage(agent.pk, "decomposed cafe\u0301", [])
        assert len(await s.search_passages(agent.pk, "café decomposed")) == 2

    store_backend.run(body)


# --- deletion, keys, stats, leases, persistence -------------------------------------------
def test_delete_agent_cascades(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        keep, keep_conv = await setup(s, "bob")
        for a, c in ((agent, conv), (keep, keep_conv)):
            await s.begin_turn(c.pk, f"t{a.pk}", "h", None, [user("shared words here")])
            await s.finish_turn(f"t{a.pk}", c.pk, a.pk, result(
                assistant("reply"), passages=[("shared passage", ["x"])]))
            await s.acquire_lease(c.pk, "me", 30)
        await s.delete_agent(agent.pk)
        assert await s.get_agent("t1", "alice") is None
        assert await s.get_blocks(agent.pk) == []
        assert await s.list_conversation_stats(agent.pk) == []
        assert await s.count_messages(agent.pk) == 0
        for table, column, key in (
                ("messages", "agent_pk", agent.pk), ("passages", "agent_pk", agent.pk),
                ("blocks", "agent_pk", agent.pk), ("turns", "conversation_pk", conv.pk),
                ("leases", "conversation_pk", conv.pk), ("conversations", "pk", conv.pk)):
            rows = await store_backend.sql(
                s, f"SELECT count(*) FROM {table} WHERE {column} = ?", key)
            assert rows == [(0,)], table
        assert await s.search_messages(agent.pk, "shared") == []
        assert len(await s.search_messages(keep.pk, "shared")) == 1
        assert len(await s.search_passages(keep.pk, "shared")) == 1
        assert await s.count_messages(keep.pk) == 2
        assert len(await s.get_blocks(keep.pk)) == 2
        assert not await s.acquire_lease(keep_conv.pk, "other", 30)  # bob's lease is intact
        await s.delete_agent(agent.pk)  # deleting again is a no-op

    store_backend.run(body)


def test_api_keys_model_stats_ping(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.ping()
        assert await s.count_api_keys() == 0
        await s.add_api_key("sha-a", "tenant-a")
        await s.add_api_key("sha-b", "tenant-b")
        assert await s.tenant_for_key_hash("sha-a") == "tenant-a"
        assert await s.tenant_for_key_hash("nope") is None
        await s.add_api_key("sha-a", "tenant-c")
        assert (await s.count_api_keys(), await s.tenant_for_key_hash("sha-a")) == (2, "tenant-c")
        # keys ls / rm / --admin (migration 7): a listing without keys, only hashes
        await s.add_api_key("sha-z", "root", admin=True)
        listed = await s.list_api_keys()
        assert [(k.key_hash, k.tenant, k.admin) for k in listed] == [
            ("sha-a", "tenant-c", False), ("sha-b", "tenant-b", False), ("sha-z", "root", True)]
        assert all(k.created_at > 0 for k in listed)
        assert await s.api_key_entry("sha-z") == listed[2]
        assert await s.api_key_entry("nope") is None
        assert await s.remove_api_key("sha-b") and not await s.remove_api_key("sha-b")
        assert await s.tenant_for_key_hash("sha-b") is None and await s.count_api_keys() == 2
        await s.add_api_key("sha-z", "root", admin=False)  # re-adding changes the flag too
        assert not (await s.api_key_entry("sha-z")).admin
        assert await s.get_model_stats("gpt") is None
        await s.put_model_stats("gpt", {"ratio": 1.07, "n": 3})
        await s.put_model_stats("gpt", {"ratio": 1.1, "n": 4})
        assert await s.get_model_stats("gpt") == {"ratio": 1.1, "n": 4}
        assert await s.get_model_stats("other") is None

    store_backend.run(body)


def test_leases(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        _, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "p1", 30)
        assert not await s.acquire_lease(conv.pk, "p2", 30)
        assert await s.acquire_lease(conv.pk, "p1", 30)  # renew
        await s.release_lease(conv.pk, "p2")  # not the owner: no effect
        assert not await s.acquire_lease(conv.pk, "p2", 30)
        await s.release_lease(conv.pk, "p1")
        assert await s.acquire_lease(conv.pk, "p2", -1)  # already expired
        assert await s.acquire_lease(conv.pk, "p1", 30)  # takes over the expired lease
        assert not await s.acquire_lease(conv.pk, "p2", 30)

    store_backend.run(body)


def test_data_survives_reopen(store_backend: Backend) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "ünï 🐶"}], "name": "x",
               "extra": {"nested": [1, 2.5, None, True], "nul": "a\x00b", "big": 2**53 + 1}}

    async def write(s: Any) -> None:
        _, conv = await setup(s)
        await s.begin_turn(conv.pk, "t", "h", None, [NewMessage(message, tokens=7)])
        await s.update_conversation(conv.pk, summary="so far", resends_history=False)

    async def read(s: Any) -> None:
        agent, conv = await setup(s)
        stored = (await s.context_messages(conv.pk))[0]
        assert stored.data == message and stored.tokens == 7
        assert list(stored.data) == list(message)  # key order kept
        assert (await s.search_messages(agent.pk, "unï"))[0].text == "ünï 🐶"
        assert (conv.summary, conv.resends_history) == ("so far", False)

    store_backend.run(write)
    store_backend.run(read)


def test_open_is_idempotent_and_close_is_final(store_backend: Backend) -> None:
    async def main() -> None:
        store = store_backend.store()
        await store.open()
        await store.open()  # a second open is a no-op
        await store.ping()
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="not open"):
            await store.ping()

    asyncio.run(main())


# --- Postgres only ------------------------------------------------------------------------
def _pg(url: str, body: Any, **kw: Any) -> Any:
    from proxy.store.postgres.store import PostgresStore

    return store_backends.run_with_store(PostgresStore(url, **kw), body)


def test_postgres_urls_and_missing_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.store.postgres.store import PostgresStore, split_url

    for url in ("postgresql://u:p@h/db", "postgres://h/db"):
        store = open_store(url)
        assert isinstance(store, PostgresStore) and store.fts_config == "english"
        assert store.dsn == url
    store = open_store("postgresql://u@h:5433/db?sslmode=disable&fts=simple")
    assert store.fts_config == "simple"
    assert store.dsn == "postgresql://u@h:5433/db?sslmode=disable"
    assert split_url("postgres://h/db?fts=german") == ("postgres://h/db", "german")
    assert PostgresStore("postgres://h/db?fts=simple", "english").fts_config == "english"
    for bad in ("x'; DROP TABLE agents; --", "a b", "1x"):
        with pytest.raises(ValueError, match="text search configuration"):
            PostgresStore(f"postgresql://h/db?fts={bad}")

    # without asyncpg, a Postgres URL says how to install it; SQLite is unaffected
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "proxy.store.postgres.store")
    with pytest.raises(ValueError, match=r"pip install 'memproxy\[postgres\]'"):
        open_store("postgresql://h/db")
    assert open_store("sqlite:///x.db").dialect == "sqlite"


def test_postgres_migrations(postgres_url: str) -> None:
    import asyncpg

    from proxy.store.migrations import MIGRATIONS, Migration, apply_postgres

    async def versions(s: Any) -> list[tuple]:
        rows = await s.pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [tuple(r) for r in rows]

    first = _pg(postgres_url, versions)
    assert first == [(m.version, m.name) for m in MIGRATIONS]
    assert _pg(postgres_url, versions) == first  # re-open applies nothing twice

    async def direct() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            extra = Migration(99, "extra", {"postgres": ["CREATE TABLE extra (x integer)"]})
            assert await apply_postgres(conn, [*MIGRATIONS, extra]) == [99]
            assert await apply_postgres(conn, [*MIGRATIONS, extra]) == []
            broken = Migration(100, "broken", {"postgres": ["CREATE TABLE half (x int)",
                                                            "NOT SQL"]})
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await apply_postgres(conn, [broken])
            assert await conn.fetchval("SELECT to_regclass('half')") is None  # rolled back
            assert await conn.fetchval("SELECT to_regclass('extra')") is not None
            with pytest.raises(RuntimeError, match="no postgres statements"):
                await apply_postgres(conn, [Migration(101, "sqlite only",
                                                      {"sqlite": ["SELECT 1"]})])
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 99
        finally:
            await conn.close()

    asyncio.run(direct())
    # every migration ships Postgres statements under the same version
    assert all(m.statements("postgres") for m in MIGRATIONS)


def test_postgres_concurrent_first_open(postgres_url: str) -> None:
    """Processes starting together on an empty database: the advisory lock serialises the
    migrations, so every store opens and each version is recorded once."""
    from proxy.store.postgres.store import PostgresStore

    async def main() -> list[tuple]:
        stores = [PostgresStore(postgres_url, max_size=2) for _ in range(6)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            rows = await stores[0].pool.fetch(
                "SELECT version FROM schema_migrations ORDER BY version")
            await asyncio.gather(*(s.ping() for s in stores))
            return [tuple(r) for r in rows]
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    from proxy.store.migrations import MIGRATIONS

    assert asyncio.run(main()) == [(m.version,) for m in MIGRATIONS]


def test_postgres_fts_config_is_the_databases(postgres_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    async def simple(s: Any) -> None:
        assert s.fts_config == "simple"
        agent, conv = await setup(s)
        await s.insert_passage(agent.pk, "the who", [])
        await s.begin_turn(conv.pk, "t", "h", None, [user("running with the dogs")])
        # simple: no stopwords and no stemming
        assert len(await s.search_passages(agent.pk, "the")) == 1
        assert await s.search_messages(agent.pk, "dog") == []
        assert len(await s.search_messages(agent.pk, "dogs")) == 1

    async def reopened(s: Any) -> None:
        assert (s.requested_fts_config, s.fts_config) == ("english", "simple")
        agent, _ = await setup(s)
        assert len(await s.search_passages(agent.pk, "who")) == 1
        assert await s.search_messages(agent.pk, "dog") == []

    _pg(f"{postgres_url}?fts=simple", simple)
    # reopened with another configuration: the database keeps its own (its index uses it)
    _pg(postgres_url, reopened, fts_config="english")
    assert "created with text search configuration 'simple'" in caplog.text
    with pytest.raises(ValueError, match="unknown text search configuration"):
        _pg(postgres_url, reopened, fts_config="klingon")


def test_postgres_nul_characters(postgres_url: str) -> None:
    """Postgres text cannot hold NUL: message data keeps it (json), text fields drop it."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t", "h", None, [user("nul\x00here")])
        await s.finish_turn("t", conv.pk, agent.pk, result(
            assistant("ok\x00"), blocks=[Block("human", "a\x00b", "d\x00")],
            passages=[("pass\x00age", ["t\x00ag"])], response={"id": "r\x00"}))
        assert (await s.list_messages(conv.pk))[0].data["content"] == "nul\x00here"
        assert (await s.search_messages(agent.pk, "nulhere"))[0].seq == 1
        assert (await s.last_turn(conv.pk)).response == {"id": "r\x00"}
        assert (await s.get_blocks(agent.pk))[1].value == "ab"
        p = await s.insert_passage(agent.pk, "x\x00y", ["a\x00"])
        assert (p.text, p.tags) == ("xy", ["a"])
        assert [x.text for x in await s.search_passages(agent.pk, "passage", tags=["tag"])] == [
            "passage"]
        await s.update_conversation(conv.pk, summary="s\x00")
        await s.evict_messages(conv.pk, 1, "e\x00")
        await s.update_agent_settings(agent.pk, {"k": "v\x00"})
        await s.fail_turn("t", {"m": "\x00"})
        assert (await s.get_conversation(agent.pk, "default")).summary == "e"

    _pg(postgres_url, body)


def test_postgres_concurrent_turns_from_two_processes(postgres_url: str) -> None:
    """Two stores = two pools, as two memproxy processes would have: begin/finish turns on the
    same conversation concurrently; seqs stay consecutive and unique, turns contiguous."""
    from proxy.store.postgres.store import PostgresStore

    async def main() -> None:
        a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)
        await a.open()
        await b.open()
        try:
            agent, conv = await setup(a)

            async def turns(store: PostgresStore, tag: str, n: int) -> None:
                for k in range(n):
                    await store.begin_turn(conv.pk, f"{tag}-{k}", "h", None,
                                           [user(f"{tag} {k} a"), user(f"{tag} {k} b")])
                    await store.finish_turn(f"{tag}-{k}", conv.pk, agent.pk,
                                            result(assistant(f"{tag} {k} c")))

            await asyncio.gather(*(turns(store, f"{name}{w}", 10)
                                   for name, store in (("a", a), ("b", b)) for w in range(4)))
            msgs = await b.list_messages(conv.pk, limit=10_000)
            assert [m.seq for m in msgs] == list(range(1, 8 * 10 * 3 + 1))
            by_turn: dict[str, list[int]] = {}
            for m in msgs:
                by_turn.setdefault(m.turn_id, []).append(m.seq)
            assert len(by_turn) == 80
            for seqs in by_turn.values():
                assert seqs[1] == seqs[0] + 1 and seqs[2] > seqs[1]
            assert await a.count_messages(agent.pk) == 240
            # the same turn finished by both processes at once: exactly one wins
            await a.begin_turn(conv.pk, "race", "h", None, [user("q")])
            outcomes = await asyncio.gather(
                a.finish_turn("race", conv.pk, agent.pk, result(assistant("from a"))),
                b.finish_turn("race", conv.pk, agent.pk, result(assistant("from b"))),
                return_exceptions=True)
            assert sorted(type(o).__name__ for o in outcomes) == ["LookupError", "int"]
            assert len(await a.list_messages(conv.pk, after_seq=240)) == 2
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_postgres_large_conversation_uses_indexes(postgres_url: str) -> None:
    """EXPLAIN: context/transcript reads use the partial (conversation_pk, seq) indexes and
    searches use the GIN indexes, on a 100k-message conversation."""
    from proxy.store.postgres.search import message_search_sql, passage_search_sql
    from proxy.store.postgres.store import SQL_CONTEXT, SQL_VISIBLE

    n = 100_000

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        others = [await s.ensure_agent("t1", f"other{i}", []) for i in range(3)]
        inputs = [user(f"message {i} word{i % 5000}", in_context=i >= n - 40) for i in range(n)]
        await s.begin_turn(conv.pk, "bulk", "h", None, inputs)
        await s.finish_turn("bulk", conv.pk, agent.pk, result(assistant("done zebra")))
        await s.evict_messages(conv.pk, n - 20, "summary")
        for k, owner in enumerate([agent, agent, agent, *others]):  # 30k passages, 15k ours
            await s.begin_turn(conv.pk, f"p{k}", "h", None, [])
            await s.finish_turn(f"p{k}", conv.pk, owner.pk, result(passages=[
                (f"passage {i} note{i % 1000}", ["a"] if i % 2 else ["b"]) for i in range(5000)]))
        await s.insert_passage(agent.pk, "zebra passage", ["a"])
        await s.terms.drain()  # indexed for search (a turn's rows are, soon after it)
        await s.pool.execute("ANALYZE")

        ctx = await s.context_messages(conv.pk)
        assert [m.seq for m in ctx] == list(range(n - 19, n + 2))
        assert len(await s.visible_transcript(conv.pk)) == n + 1
        assert await s.count_messages(agent.pk) == n + 1
        assert [h.seq for h in await s.search_messages(agent.pk, "zebra")] == [n + 1]
        assert len(await s.search_messages(agent.pk, "word42", limit=100)) == 20

        async def plan(sql: str, *args: Any) -> str:
            rows = await s.pool.fetch(f"EXPLAIN {sql}", *args)
            return "\n".join(r[0] for r in rows)

        assert "Index Scan using messages_context" in await plan(SQL_CONTEXT, conv.pk)
        tail = await plan(SQL_VISIBLE.replace("ORDER BY", "AND seq > $2 ORDER BY"), conv.pk, n)
        assert "Index Scan using messages_" in tail and "Seq Scan" not in tail
        for query in ("zebra", "word42 message"):
            sql, args = message_search_sql(s.fts_config, agent.pk, query, ["user"], 10, 0, 2e9)
            assert "Bitmap Index Scan on message_terms_tsv" in await plan(sql, *args)
        sql, args = passage_search_sql(s.fts_config, agent.pk, "zebra", ["a"], 5)
        assert "Bitmap Index Scan on passages_tsv" in await plan(sql, *args)

    _pg(postgres_url, body)


# --- one read per turn ---------------------------------------------------------------------

def test_begin_turn_returns_the_first_seq_and_load_turn_state_reads_it_all(
    store_backend: Backend,
) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await s.begin_turn(conv.pk, "t1", "h1", None, [user("one"), user("two")])
        assert first == 1
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": None}, visible=False, in_context=True),
            assistant("reply"), blocks=[Block("human", "Name: Ada")],
            passages=[("a fact", ["x"])]))
        assert await s.begin_turn(conv.pk, "t2", "h2", None, []) == 5
        assert await s.begin_turn(conv.pk, "t3", "h3", None, [user("three")],
                                  supersede_from_seq=3) == 5
        await s.evict_messages(conv.pk, 1, "they said one")

        state = await s.load_turn_state(agent.pk, conv.pk)
        assert state.conversation.pk == conv.pk and state.conversation.summary == "they said one"
        assert state.last_turn.turn_id == "t3" and state.last_turn.status == "open"
        assert [(b.label, b.value) for b in state.blocks] == [("persona", DEFAULT_BLOCKS[0].value),
                                                              ("human", "Name: Ada")]
        assert state.recall_messages == await s.count_messages(agent.pk) == 3
        assert state.archival_passages == 1
        assert [m.seq for m in state.context] == [2, 5]
        assert [m.seq for m in state.context] == [m.seq for m in await s.context_messages(conv.pk)]

        other, _ = await setup(s, "bob")
        empty = await s.ensure_conversation(other.pk, "fresh")
        fresh = await s.load_turn_state(other.pk, empty.pk)
        assert fresh.last_turn is None and fresh.context == [] and fresh.archival_passages == 0
        await s.delete_agent(other.pk)
        with pytest.raises(LookupError):
            await s.load_turn_state(other.pk, empty.pk)

    store_backend.run(body)


def test_finish_turn_keeps_passages_within_the_agents_cap(store_backend: Backend) -> None:
    """A turn's passage allowance is counted when it starts; turns of the same agent in other
    conversations may add passages meanwhile. finish_turn counts again when it writes, so
    concurrent turns at the edge of [limits] passages_per_agent never overshoot it."""
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        await s.insert_passage(agent.pk, "already there", [])
        convs = [await s.ensure_conversation(agent.pk, f"c{n}") for n in range(6)]
        for n, conv in enumerate(convs):
            await s.begin_turn(conv.pk, f"t{n}", f"h{n}", None, [user("hi")])

        def finishing(n: int, conv: Any) -> Any:
            return s.finish_turn(f"t{n}", conv.pk, agent.pk, TurnResult(
                [assistant("ok")], [], [(f"fact {n}.{k}", []) for k in range(2)],
                {"id": f"r{n}"}, max_passages=6))

        stored = await asyncio.gather(*(finishing(n, c) for n, c in enumerate(convs)))
        assert sum(stored) == 5 and sorted(stored)[-1] == 2  # 1 + 5 = the cap of 6
        assert await s.count_passages(agent.pk) == 6
        # every turn is done and its answer stored, even where its passages were not
        for conv in convs:
            assert (await s.last_turn(conv.pk)).status == "done"
            assert [m.data["content"] for m in await s.list_messages(conv.pk)] == ["hi", "ok"]
        # without a cap nothing is held back
        await s.begin_turn(convs[0].pk, "t9", "h9", None, [user("again")])
        assert await s.finish_turn("t9", convs[0].pk, agent.pk, result(
            assistant("ok"), passages=[("free", [])])) == 1

    store_backend.run(body)
