"""The operator side of the `Store` contract (agents REST API, block history, export/import),
run against every backend (SQLite and Postgres) like test_store_contract.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.core.types import Block, BlockRevision, NewMessage, TurnResult
from proxy.store.admin_types import AgentExistsError, BlockTooLongError
from tests import store_backends
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend


# --- agents --------------------------------------------------------------------------------
def test_agent_pages_are_ordered_by_tenant_then_id_in_byte_order(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        for tenant, agent_id in [("b", "x"), ("a", "b"), ("a", "B"), ("a", "a"), ("a", "é"),
                                 ("B", "z")]:
            await s.ensure_agent(tenant, agent_id, [])
        every = [(a.tenant, a.agent_id) for a in await s.list_agents_page(None, limit=100)]
        assert every == [("B", "z"), ("a", "B"), ("a", "a"), ("a", "b"), ("a", "é"), ("b", "x")]
        page = await s.list_agents_page(None, after=("a", "a"), limit=2)
        assert [(a.tenant, a.agent_id) for a in page] == [("a", "b"), ("a", "é")]
        assert [a.agent_id for a in await s.list_agents_page("a", limit=2)] == ["B", "a"]
        assert [a.agent_id for a in await s.list_agents_page("a", after=("a", "b"))] == ["é"]
        assert await s.list_agents_page("a", after=("a", "é")) == []
        assert await s.list_agents_page("nobody") == []

    store_backend.run(body)


def test_create_agent_stats_and_settings(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent = await s.create_agent("t", "ada", [Block("persona", "kind"), Block("notes")],
                                     {"model": "m", "keep": 1})
        assert (agent.tenant, agent.agent_id, agent.settings) == ("t", "ada", {"model": "m",
                                                                               "keep": 1})
        assert await s.create_agent("t", "ada", [], {}) is None  # exists
        assert [(b.label, b.value) for b in await s.get_blocks(agent.pk)] == [
            ("persona", "kind"), ("notes", "")]
        # a created block with a value is its first revision
        [rev] = await s.block_history(agent.pk, "persona")
        assert (rev.old_value, rev.new_value, rev.source, rev.turn_id) == ("", "kind", "api",
                                                                           None)
        assert await s.block_history(agent.pk, "notes") == []
        assert await s.merge_agent_settings(agent.pk, {"model": None, "new": [1, "ü"]}) == {
            "keep": 1, "new": [1, "ü"]}
        assert (await s.get_agent("t", "ada")).settings == {"keep": 1, "new": [1, "ü"]}
        assert await s.merge_agent_settings(agent.pk + 1000, {"x": 1}) is None

        conv = await s.ensure_conversation(agent.pk, "c1")
        await s.ensure_conversation(agent.pk, "c2")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": "x"}, visible=False), assistant("yo"),
            passages=[("p", [])]))
        other = await s.create_agent("t", "bob", [], {})
        stats = await s.agent_stats([agent.pk, other.pk, agent.pk + 1000])
        assert set(stats) == {agent.pk, other.pk}
        assert vars(stats[agent.pk]) == {"conversations": 2, "messages": 2, "passages": 1}
        assert vars(stats[other.pk]) == {"conversations": 0, "messages": 0, "passages": 0}
        assert await s.agent_stats([]) == {}

    store_backend.run(body)


# --- blocks and history ----------------------------------------------------------------------
def test_block_writes_history_and_undo(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.get_block(agent.pk, "nope") is None
        written = await s.write_block(agent.pk, Block("human", "Name: Ada", "who", 40),
                                      source="api")
        assert (written.value, written.limit, written.updated_at is not None) == (
            "Name: Ada", 40, True)
        got = await s.get_block(agent.pk, "human")
        assert (got.value, got.description, got.limit, got.read_only) == ("Name: Ada", "who",
                                                                          40, False)
        # same value again (only the description changes): no revision
        await s.write_block(agent.pk, Block("human", "Name: Ada", "new desc", 40), source="api")
        # a model edit inside a turn is recorded with the turn's id
        await s.begin_turn(conv.pk, "turn-1", "h", None, [user("I like tea")])
        edited = Block("human", "Name: Ada\nLikes tea", "new desc", 40)
        await s.finish_turn("turn-1", conv.pk, agent.pk, TurnResult(
            [assistant("ok")], [edited], [], {"id": "r"}, revisions=[BlockRevision(
                "human", "Name: Ada", edited.value, "tool:core_memory_append")]))
        history = await s.block_history(agent.pk, "human")
        assert [(r.source, r.old_value, r.new_value, r.turn_id) for r in history] == [
            ("tool:core_memory_append", "Name: Ada", "Name: Ada\nLikes tea", "turn-1"),
            ("api", "", "Name: Ada", None)]
        assert history[0].id > history[1].id and history[0].created_at >= history[1].created_at
        assert [r.id for r in await s.block_history(agent.pk, "human", limit=1)] == [
            history[0].id]

        # undo the newest: back to the value before it, recorded as "undo"
        undone = await s.undo_block(agent.pk, "human")
        assert undone.value == "Name: Ada" and undone.description == "new desc"
        assert (await s.get_block(agent.pk, "human")).value == "Name: Ada"
        newest = (await s.block_history(agent.pk, "human"))[0]
        assert (newest.source, newest.old_value, newest.new_value) == (
            "undo", "Name: Ada\nLikes tea", "Name: Ada")
        # undo a given revision: the value before it (here: empty)
        assert (await s.undo_block(agent.pk, "human", history[1].id)).value == ""
        # unknown revision, another label's revision, a missing block
        assert await s.undo_block(agent.pk, "human", history[0].id + 1000) is None
        assert await s.undo_block(agent.pk, "persona", history[0].id) is None
        assert await s.undo_block(agent.pk, "nope") is None
        assert await s.undo_block(agent.pk, "persona") is None  # no revisions yet
        # a value over the (since lowered) limit is refused, nothing written
        await s.write_block(agent.pk, Block("human", "", "", 5), source="api")
        count = len(await s.block_history(agent.pk, "human"))
        with pytest.raises(BlockTooLongError):
            await s.undo_block(agent.pk, "human", history[0].id)  # back to "Name: Ada"
        assert len(await s.block_history(agent.pk, "human")) == count
        assert (await s.get_block(agent.pk, "human")).value == ""

        # delete: recorded (value -> ""), history kept; deleting again is False
        await s.write_block(agent.pk, Block("notes", "n1"), source="api")
        assert await s.delete_block(agent.pk, "notes") is True
        assert await s.delete_block(agent.pk, "notes") is False
        assert await s.get_block(agent.pk, "notes") is None
        assert [(r.old_value, r.new_value, r.source) for r in await s.block_history(
            agent.pk, "notes")] == [("n1", "", "api"), ("", "n1", "api")]
        assert await s.undo_block(agent.pk, "notes") is None  # the block is gone
        # history goes with the agent
        await s.delete_agent(agent.pk)
        assert await s.block_history(agent.pk, "human") == []

    store_backend.run(body)


def test_concurrent_block_writes_record_a_chain(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        await asyncio.gather(*(s.write_block(agent.pk, Block("human", f"v{i}"), source="api")
                               for i in range(10)))
        history = list(reversed(await s.block_history(agent.pk, "human")))
        assert len(history) == 10
        assert history[0].old_value == ""
        for before, after in zip(history, history[1:], strict=False):
            assert after.old_value == before.new_value  # each edit saw the previous value

    store_backend.run(body)


# --- conversations, search, passages -----------------------------------------------------------
def test_conversation_stats_and_searches(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, other_conv = await setup(s, "bob")
        empty = await s.ensure_conversation(agent.pk, "empty")
        second = await s.ensure_conversation(agent.pk, "second")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("I adopted a puppy named Rex")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "core_memory_append",
                                                              "arguments": "{}"}}]},
                       visible=False),
            NewMessage({"role": "tool", "tool_call_id": "c1", "content": "puppy ok"},
                       visible=False),
            assistant("A puppy! Puppy training takes patience.")))
        await s.begin_turn(conv.pk, "t2", "h", None, [user("and a puppy cat")])
        await s.begin_turn(conv.pk, "t3", "h", None, [user("puppy again")], supersede_from_seq=5)
        await s.begin_turn(second.pk, "t4", "h", None, [user("weather talk")])
        await s.begin_turn(other_conv.pk, "t5", "h", None, [user("puppy puppy")])
        await store_backend.sql(s, "UPDATE messages SET created_at = 1000 + seq")
        await store_backend.sql(s, "UPDATE conversations SET created_at = 500")
        await store_backend.sql(s, "UPDATE messages SET created_at = 2000 WHERE"
                                   " conversation_pk = ?", second.pk)

        stats = await s.list_conversation_stats(agent.pk)
        assert [(c.conversation.conversation_id, c.messages, c.last_message_at) for c in stats] == [
            ("second", 1, 2000), ("default", 3, 1006), ("empty", 0, None)]
        assert stats[2].conversation.pk == empty.pk

        hits = await s.search_conversation(conv.pk, agent.pk, "puppy")
        assert sorted(m.seq for m, _ in hits) == [1, 4, 6]  # visible, not superseded
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
        assert next(m for m, _ in hits if m.seq == 4).data["content"].startswith("A puppy")
        assert sorted(m.seq for m, _ in await s.search_conversation(
            conv.pk, agent.pk, "puppy", include_superseded=True)) == [1, 4, 5, 6]
        assert len(await s.search_conversation(conv.pk, agent.pk, "puppy", limit=1)) == 1
        assert await s.search_conversation(conv.pk, agent.pk, "   ") == []
        assert await s.search_conversation(second.pk, agent.pk, "puppy") == []

        found = await s.search_agent_messages(agent.pk, "puppy")
        assert sorted((cid, m.seq) for cid, m, _ in found) == [
            ("default", 1), ("default", 4), ("default", 6)]
        assert all(score > 0 for _, _, score in found)
        assert {m.seq: m.turn_id for _, m, _ in found} == {1: "t1", 4: "t1", 6: "t3"}
        assert [m.seq for _, m, _ in await s.search_agent_messages(
            agent.pk, "puppy", roles=["assistant"])] == [4]
        newest = await s.search_agent_messages(agent.pk, "", limit=2)
        assert [(cid, m.seq, score) for cid, m, score in newest] == [
            ("second", 1, 0.0), ("default", 6, 0.0)]

        p1 = await s.insert_passage(agent.pk, "The cat sat", ["pets", "cat"])
        p2 = await s.insert_passage(agent.pk, "Dogs bark", ["pets"])
        p3 = await s.insert_passage(agent.pk, "Rainy day", [])
        await s.insert_passage(other.pk, "bob's", ["pets"])
        assert [p.pk for p in await s.list_passages_page(agent.pk)] == [p3.pk, p2.pk, p1.pk]
        assert [p.pk for p in await s.list_passages_page(agent.pk, limit=1, offset=1)] == [p2.pk]
        assert [p.pk for p in await s.list_passages_page(agent.pk, tags=["pets"])] == [p2.pk,
                                                                                      p1.pk]
        assert [p.pk for p in await s.list_passages_page(agent.pk, tags=["pets", "cat"])] == [
            p1.pk]
        page = await s.list_passages_page(agent.pk, tags=["cat"])
        assert (page[0].text, page[0].tags, page[0].score) == ("The cat sat", ["pets", "cat"],
                                                               None)

    store_backend.run(body)


# --- export / import ---------------------------------------------------------------------------
def _comparable(dump: Any, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """A dump without database ids (pks, revision ids), turn ids mapped through `rename`."""
    def tid(turn_id: str | None) -> str | None:
        return (rename or {}).get(turn_id, turn_id) if turn_id else turn_id

    return {
        "agent": (dump.agent.created_at, dump.agent.settings),
        "blocks": [vars(b) for b in dump.blocks],
        "revisions": [(r.label, r.old_value, r.new_value, r.source, tid(r.turn_id),
                       r.created_at) for r in dump.revisions],
        "conversations": [(
            vars(c.conversation) | {"pk": None, "agent_pk": None}, c.head_hash,
            # path and visible hashes are derived: an import computes what is missing (these
            # rows were stored without, as a store test stores them)
            [vars(m) | {"pk": None, "turn_id": tid(m.turn_id), "path_hash": None,
                        "visible_hash": None} for m in c.messages],
            [vars(t) | {"turn_id": tid(t.turn_id)} for t in c.turns])
            for c in dump.conversations],
        "passages": [(p.text, p.tags, p.created_at) for p in dump.passages],
    }


async def _rich_agent(s: Any) -> Any:
    agent = await s.create_agent("t1", "alice", [Block("persona", "kind", "who", 100, True),
                                                 Block("human", "")], {"resends_history": True})
    await s.write_block(agent.pk, Block("human", "Name: Ada", "user"), source="api")
    conv = await s.ensure_conversation(agent.pk, "default")
    await s.begin_turn(conv.pk, "turn-a", "hash-a", "idem-a", [user(f"message {i}")
                                                               for i in range(4)])
    await s.finish_turn("turn-a", conv.pk, agent.pk, TurnResult(
        [NewMessage({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "core_memory_append",
                                                          "arguments": "{\"x\": 1.0}"}}]},
                    visible=False, tokens=7),
         NewMessage({"role": "tool", "tool_call_id": "c1", "content": "OK ✓"}, visible=False),
         NewMessage({"role": "assistant", "content": "done"}, visible_hash="vh", tokens=3)],
        [Block("human", "Name: Ada\nLikes tea", "user")], [("a fact", ["t"]), ("b", [])],
        {"id": "chatcmpl-x", "choices": [{"message": {"content": "done"}}]},
        revisions=[BlockRevision("human", "Name: Ada", "Name: Ada\nLikes tea",
                                 "tool:core_memory_append")]))
    await s.evict_messages(conv.pk, 2, "they said hello")
    await s.update_conversation(conv.pk, resends_history=False, head_hash="head-1")
    await s.begin_turn(conv.pk, "turn-b", "hash-b", None, [user("edited")],
                       supersede_from_seq=4)
    await s.fail_turn("turn-b", {"status": 502})
    chat = await s.ensure_conversation(agent.pk, "chat-2")
    await s.begin_turn(chat.pk, "turn-c", "hash-c", None, [user("other chat")])
    return agent


def test_export_import_round_trip_and_copies(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent = await _rich_agent(s)
        dump = await s.export_agent(agent.pk)
        assert await s.export_agent(agent.pk + 1000) is None
        assert [c.conversation.conversation_id for c in dump.conversations] == ["default",
                                                                               "chat-2"]
        default = dump.conversations[0]
        assert [(m.seq, m.in_context, m.visible, m.superseded) for m in default.messages] == [
            (1, False, True, False), (2, False, True, False), (3, True, True, False),
            (4, False, True, True), (5, False, False, True), (6, False, False, True),
            (7, False, True, True), (8, True, True, False)]
        assert [(t.turn_id, t.status, t.idempotency_key, t.first_seq) for t in default.turns] == [
            ("turn-a", "done", "idem-a", 1), ("turn-b", "failed", None, 8)]
        assert default.turns[0].response == {"id": "chatcmpl-x",
                                             "choices": [{"message": {"content": "done"}}]}
        assert (default.conversation.summary, default.head_hash) == ("they said hello", "head-1")
        assert [r.source for r in dump.revisions] == ["api", "api", "tool:core_memory_append"]

        # a copy next to the original: same content, turn ids renamed (they are unique)
        copy = await s.import_agent("t2", "alice-copy", dump)
        assert (copy.tenant, copy.agent_id, copy.created_at) == ("t2", "alice-copy",
                                                                 agent.created_at)
        copied = await s.export_agent(copy.pk)
        new_ids = [t.turn_id for c in copied.conversations for t in c.turns]
        assert not set(new_ids) & {"turn-a", "turn-b", "turn-c"}
        rename = dict(zip(new_ids, ["turn-a", "turn-b", "turn-c"], strict=True))
        expected = _comparable(dump)
        expected["revisions"] += [("persona", "", "kind", "import", None),
                                  ("human", "", "Name: Ada\nLikes tea", "import", None)]
        got = _comparable(copied, rename)
        assert all(m.path_hash for c in copied.conversations for m in c.messages if m.visible)
        assert [r[:5] for r in got["revisions"]] == [r[:5] for r in expected["revisions"]]
        assert {k: v for k, v in got.items() if k != "revisions"} == {
            k: v for k, v in expected.items() if k != "revisions"}
        assert await s.count_messages(copy.pk) == await s.count_messages(agent.pk) == 5
        assert await s.count_passages(copy.pk) == 2
        assert [(cid, m.seq) for cid, m, _ in await s.search_agent_messages(copy.pk, "edited")
                ] == [("default", 8)]
        assert sorted(m.seq for m, _ in await s.search_conversation(  # not the superseded 4
            copied.conversations[0].conversation.pk, copy.pk, "message")) == [1, 2, 3]
        assert [p.text for p in await s.search_passages(copy.pk, "fact")] == ["a fact"]
        conv = await s.get_conversation(copy.pk, "default")
        assert [m.seq for m in await s.context_messages(conv.pk)] == [3, 8]
        assert (await s.last_turn(conv.pk)).status == "failed"

        # an existing id is a conflict unless replaced; replacing records what it overwrote
        with pytest.raises(AgentExistsError):
            await s.import_agent("t1", "alice", dump)
        await s.write_block(agent.pk, Block("human", "changed"), source="api")
        replaced = await s.import_agent("t1", "alice", dump, replace=True)
        assert replaced.pk != agent.pk and await s.export_agent(agent.pk) is None
        again = await s.export_agent(replaced.pk)
        assert [t.turn_id for c in again.conversations for t in c.turns] == [
            "turn-a", "turn-b", "turn-c"]  # the old agent's turns went with it: ids kept
        assert [(r.label, r.old_value, r.new_value, r.source) for r in again.revisions[3:]] == [
            ("human", "changed", "Name: Ada\nLikes tea", "import")]  # persona: unchanged
        assert _comparable(again)["conversations"] == expected["conversations"]
        assert await store_backend.sql(s, "SELECT agent_id FROM agents ORDER BY pk") == [
            ("alice-copy",), ("alice",)]

    store_backend.run(body)


def test_failed_import_leaves_nothing(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent = await _rich_agent(s)
        dump = await s.export_agent(agent.pk)
        dump.conversations[1].messages.append(dump.conversations[1].messages[0])  # seq twice
        with pytest.raises(store_backend.integrity_error):
            await s.import_agent("t1", "alice", dump, replace=True)
        assert (await s.get_agent("t1", "alice")).pk == agent.pk  # the original is intact
        assert await s.get_agent("t1", "other") is None
        with pytest.raises(store_backend.integrity_error):
            await s.import_agent("t1", "other", dump)
        assert await s.get_agent("t1", "other") is None
        assert await store_backend.sql(s, "SELECT agent_id FROM agents ORDER BY pk") == [
            ("alice",)]

    store_backend.run(body)
