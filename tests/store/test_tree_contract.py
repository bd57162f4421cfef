"""The conversation tree's part of the `Store` contract (core/tree.py, proxy/store/base.py),
run against every backend like test_store_contract.py: rows keep the parents and path hashes
they are given, the lookups that locate a request (find_nodes, find_anchor, path_tip), and
moving the active path (begin_turn with parent_seq / move) with the summary of each path.

The rows are hashed as a turn hashes them (`core.tree.hang`), so the lookups are checked
against the hashes a client's resent history would have.
"""

from __future__ import annotations

from typing import Any

from proxy.core.messages import visible_hash
from proxy.core.tree import ROOT_HASH, hang
from proxy.core.types import KnownContext, NewMessage
from tests import store_backends
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend


def step(n: int) -> list[NewMessage]:
    """An internal memory step (tool call and result): invisible rows."""
    call = {"id": f"c{n}", "type": "function",
            "function": {"name": "core_memory_append", "arguments": "{}"}}
    return [NewMessage({"role": "assistant", "content": None, "tool_calls": [call]},
                       visible=False),
            NewMessage({"role": "tool", "tool_call_id": f"c{n}", "content": "OK"},
                       visible=False)]


async def exchange(s: Any, agent_pk: int, conv_pk: int, tid: str, question: str | None,
                   answer: str, *, under: tuple[int | None, str] = (None, ROOT_HASH),
                   move: bool = False, steps: bool = False) -> tuple[int, str]:
    """A turn as the service writes it: the question (if any) under `under` = (parent_seq,
    its path hash), then optional internal steps and the answer. Returns (seq, path hash) of
    the answer."""
    parent_seq, start = under
    inputs = [user(question)] if question is not None else []
    tip = hang(inputs, start)
    await s.begin_turn(conv_pk, tid, "h", None, inputs, parent_seq=parent_seq, move=move)
    out = [*(step(1) if steps else []), assistant(answer)]
    hang(out, tip)
    await s.finish_turn(tid, conv_pk, agent_pk, result(*out))
    last = (await s.list_messages(conv_pk, include_superseded=True, limit=1000))[-1]
    return last.seq, last.path_hash


async def rows(s: Any, conv_pk: int) -> list[tuple[int, int, bool, bool]]:
    """(seq, parent_seq, active, in context) of every row."""
    return [(m.seq, m.parent_seq, not m.superseded, m.in_context)
            for m in await s.list_messages(conv_pk, include_superseded=True, limit=1000)]


async def context(s: Any, agent_pk: int, conv_pk: int) -> list[int]:
    return [m.seq for m in (await s.load_turn_state(agent_pk, conv_pk)).context]


def nodes(found: list[Any]) -> list[tuple]:
    return sorted((n.conversation_id, n.seq, n.role, n.active) for n in found)


def test_rows_keep_the_tree_they_are_given(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        inputs = [user("one"), user("two")]
        tip = hang(inputs, ROOT_HASH)
        await s.begin_turn(conv.pk, "t1", "h", None, inputs)
        assert (await s.last_turn(conv.pk)).finished_at is None
        out = [*step(1), assistant("three")]
        hang(out, tip)
        await s.finish_turn("t1", conv.pk, agent.pk, result(*out))
        expected = [(1, 0, inputs[0].path_hash), (2, 1, tip), (3, 2, tip), (4, 3, tip),
                    (5, 4, out[2].path_hash)]
        assert [(m.seq, m.parent_seq, m.path_hash) for m in await s.list_messages(conv.pk)
                ] == expected
        state = await s.load_turn_state(agent.pk, conv.pk)
        assert [(m.seq, m.parent_seq, m.path_hash) for m in state.context] == expected
        assert state.last_turn.finished_at >= state.last_turn.created_at
        assert [(m.seq, m.parent_seq, m.path_hash) for m in await s.context_messages(conv.pk)
                ] == expected
        assert [(m.seq, m.path_hash) for m in await s.visible_transcript(conv.pk)] == [
            (1, inputs[0].path_hash), (2, tip), (5, out[2].path_hash)]
        # a known context: the rows added since are read with their tree too
        known = KnownContext(state.epoch, state.conversation.created_at, tuple(state.context),
                             state.left_context)
        seq, path = await exchange(s, agent.pk, conv.pk, "t2", "four", "five",
                                   under=(5, out[2].path_hash))
        again = await s.load_turn_state(agent.pk, conv.pk, known)
        assert [(m.seq, m.parent_seq) for m in again.context][-2:] == [(6, 5), (7, 6)]
        assert again.context[-1].path_hash == path and seq == 7

    store_backend.run(body)


def test_find_nodes_in_a_conversation_and_across_the_agent(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, a = await setup(s, conversation_id="a")
        b = await s.ensure_conversation(agent.pk, "b")
        bob, bobs = await setup(s, "bob")
        a1 = await exchange(s, agent.pk, a.pk, "t1", "hi", "hello", steps=True)  # 1, 4
        a2 = await exchange(s, agent.pk, a.pk, "t2", "how", "well", under=a1)  # 5, 6
        await exchange(s, agent.pk, a.pk, "t3", "how?", "fine", under=a1)  # 7, 8; 5-6 cut
        await exchange(s, agent.pk, b.pk, "t4", "hi", "hello")  # the same path as a's 1-2
        await exchange(s, bob.pk, bobs.pk, "t5", "hi", "hello")
        hello = a1[1]  # the steps between do not change the path's hash
        assert hang([user("hi"), assistant("hello")], ROOT_HASH) == hello
        how = (await s.list_messages(a.pk, include_superseded=True))[4].path_hash
        wanted = [hang([user("hi")], ROOT_HASH), hello, how, a2[1], "unknown", hello]
        # the steps share the question's path hash but are not messages of the path
        assert nodes(await s.find_nodes(agent.pk, wanted, conversation_pk=a.pk)) == [
            ("a", 1, "user", True), ("a", 4, "assistant", True),
            ("a", 5, "user", False), ("a", 6, "assistant", False)]
        found = await s.find_nodes(agent.pk, wanted)
        assert nodes(found) == [
            ("a", 1, "user", True), ("a", 4, "assistant", True), ("a", 5, "user", False),
            ("a", 6, "assistant", False), ("b", 1, "user", True), ("b", 2, "assistant", True)]
        node = next(n for n in found if (n.conversation_id, n.seq) == ("a", 6))
        assert (node.path_hash, node.turn_id, node.conversation_pk) == (a2[1], "t2", a.pk)
        assert nodes(await s.find_nodes(bob.pk, wanted)) == [
            ("default", 1, "user", True), ("default", 2, "assistant", True)]
        assert await s.find_nodes(agent.pk, []) == []
        assert await s.find_nodes(agent.pk, wanted, conversation_pk=bobs.pk) == []

    store_backend.run(body)


def test_find_anchor(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, a = await setup(s, conversation_id="a")
        b = await s.ensure_conversation(agent.pk, "b")
        v = {t: visible_hash(m.data) for t, m in [
            ("hi", user("hi")), ("hello", assistant("hello")), ("q", user("q")),
            ("r", assistant("r")), ("x", user("x")), ("y", assistant("y"))]}
        first = await exchange(s, agent.pk, a.pk, "t1", "hi", "hello")  # 1, 2
        await exchange(s, agent.pk, a.pk, "t2", "q", "r", under=first, steps=True)  # 3, 6
        run = [v["hello"], v["q"], v["r"]]
        # the whole run of visible ancestors, the steps between q and r skipped
        found = await s.find_anchor(agent.pk, run)
        assert (found.conversation_id, found.seq, found.active, found.role) == (
            "a", 6, True, "assistant")
        assert (await s.find_anchor(agent.pk, [v["hi"], *run])).seq == 6
        assert await s.find_anchor(agent.pk, [v["x"], *run]) is None  # another ancestor
        assert await s.find_anchor(agent.pk, [v["y"], v["hi"], *run]) is None  # beyond root
        assert await s.find_anchor(agent.pk, []) is None
        # the same exchange again after an edit: the active one, then the newest
        await exchange(s, agent.pk, a.pk, "t3", "q", "r", under=first)  # 7, 8; 3-6 cut
        found = await s.find_anchor(agent.pk, run)
        assert (found.seq, found.active) == (8, True)
        await exchange(s, agent.pk, a.pk, "t4", "x", "y", under=first)  # 9, 10; 7-8 cut
        found = await s.find_anchor(agent.pk, run)
        assert (found.seq, found.active, found.turn_id) == (8, False, "t3")
        # another conversation's active path comes before superseded ones
        other = await exchange(s, agent.pk, b.pk, "t5", "hi", "hello")
        await exchange(s, agent.pk, b.pk, "t6", "q", "r", under=other)
        found = await s.find_anchor(agent.pk, run)
        assert (found.conversation_id, found.seq, found.active) == ("b", 4, True)
        found = await s.find_anchor(agent.pk, run, conversation_pk=a.pk)
        assert (found.conversation_id, found.seq, found.active) == ("a", 8, False)
        bob, _ = await setup(s, "bob")
        assert await s.find_anchor(bob.pk, run) is None

    store_backend.run(body)


def test_path_tip(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.path_tip(conv.pk) is None
        first = await exchange(s, agent.pk, conv.pk, "t1", "hi", "hello")
        await exchange(s, agent.pk, conv.pk, "t2", "q", "r", under=first)
        tip = await s.path_tip(conv.pk)
        assert (tip.seq, tip.role, tip.active, tip.turn_id, tip.conversation_id) == (
            4, "assistant", True, "t2", "default")
        await s.begin_turn(conv.pk, "t3", "h", None, [], parent_seq=first[0])
        tip = await s.path_tip(conv.pk)
        assert (tip.seq, tip.path_hash) == first

    store_backend.run(body)


def test_begin_turn_truncates_after_its_parent_and_finish_chains_from_it(
    store_backend: Backend,
) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await exchange(s, agent.pk, conv.pk, "t1", "hi", "hello")
        question = await exchange(s, agent.pk, conv.pk, "t2", "q", "r", under=first)
        # regenerate: no input, the reply follows the question (seq 3), not the newest row
        assert await s.begin_turn(conv.pk, "t3", "h", None, [], parent_seq=3) == 5
        assert await rows(s, conv.pk) == [(1, 0, True, True), (2, 1, True, True),
                                          (3, 2, True, True), (4, 3, False, False)]
        await s.finish_turn("t3", conv.pk, agent.pk, result(*step(1), assistant("r2")))
        assert (await rows(s, conv.pk))[4:] == [(5, 3, True, True), (6, 5, True, True),
                                                (7, 6, True, True)]
        # edit: the new input follows the row before the edited one
        assert await s.begin_turn(conv.pk, "t4", "h", None, [user("q2"), user("more")],
                                  parent_seq=2) == 8
        await s.finish_turn("t4", conv.pk, agent.pk, result(assistant("r3")))
        assert [r for r in await rows(s, conv.pk) if r[2]] == [
            (1, 0, True, True), (2, 1, True, True), (8, 2, True, True), (9, 8, True, True),
            (10, 9, True, True)]
        assert await context(s, agent.pk, conv.pk) == [1, 2, 8, 9, 10]
        # without parent_seq: after the newest row, or before the superseded ones
        await s.begin_turn(conv.pk, "t5", "h", None, [user("next")])
        await s.begin_turn(conv.pk, "t6", "h", None, [user("again")], supersede_from_seq=11)
        assert (await rows(s, conv.pk))[-2:] == [(11, 10, False, False), (12, 10, True, True)]
        assert question[0] == 4

    store_backend.run(body)


def test_a_move_restores_an_old_branch(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await exchange(s, agent.pk, conv.pk, "t1", "hi", "hello")  # 1, 2
        old = await exchange(s, agent.pk, conv.pk, "t2", "q", "r", under=first)  # 3, 4
        await exchange(s, agent.pk, conv.pk, "t3", "q'", "r'", under=first)  # 5, 6
        await exchange(s, agent.pk, conv.pk, "t4", "more", "ok", under=old, move=True)
        assert await rows(s, conv.pk) == [
            (1, 0, True, True), (2, 1, True, True), (3, 2, True, True), (4, 3, True, True),
            (5, 2, False, False), (6, 5, False, False), (7, 4, True, True), (8, 7, True, True)]
        assert (await s.path_tip(conv.pk)).seq == 8
        assert await s.count_messages(agent.pk) == 6
        # to the root: everything is a branch now
        await s.begin_turn(conv.pk, "t5", "h", None, [user("new")], parent_seq=0, move=True)
        assert [r for r in await rows(s, conv.pk) if r[2]] == [(9, 0, True, True)]

    store_backend.run(body)


def test_each_path_has_its_summary(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        one = await exchange(s, agent.pk, conv.pk, "t1", "u1", "a1")  # 1, 2
        two = await exchange(s, agent.pk, conv.pk, "t2", "u2", "a2", under=one)  # 3, 4
        three = await exchange(s, agent.pk, conv.pk, "t3", "u3", "a3", under=two)  # 5, 6
        assert await s.evict_messages(conv.pk, 4, "sum A") == 4
        assert await store_backend.sql(
            s, "SELECT seq, summary FROM messages WHERE summary IS NOT NULL") == [(4, "sum A")]
        assert await context(s, agent.pk, conv.pk) == [5, 6]

        async def summary() -> str:
            return (await s.get_conversation(agent.pk, "default")).summary

        # a branch after the summary's row keeps it
        await exchange(s, agent.pk, conv.pk, "t4", "u3'", "a3'", under=two, move=True)  # 7, 8
        assert (await summary(), await context(s, agent.pk, conv.pk)) == ("sum A", [7, 8])
        # a branch leaving path A before row 4: no summary on its path, all of it in context
        b = await exchange(s, agent.pk, conv.pk, "t5", "u2b", "a2b", under=one,
                           move=True)  # 9, 10
        assert (await summary(), await context(s, agent.pk, conv.pk)) == ("", [1, 2, 9, 10])
        assert await s.evict_messages(conv.pk, 9, "sum B") == 3
        assert (await summary(), await context(s, agent.pk, conv.pk)) == ("sum B", [10])
        # back to path A's a3: its summary and exactly the rows after it
        await exchange(s, agent.pk, conv.pk, "t6", "u4", "a4", under=three, move=True)
        assert (await summary(), await context(s, agent.pk, conv.pk)) == (
            "sum A", [5, 6, 11, 12])
        # and to path B again
        await exchange(s, agent.pk, conv.pk, "t7", "u3b", "a3b", under=b, move=True)
        assert (await summary(), await context(s, agent.pk, conv.pk)) == (
            "sum B", [10, 13, 14])
        assert [r[0] for r in await rows(s, conv.pk) if r[2]] == [1, 2, 9, 10, 13, 14]

    store_backend.run(body)


def test_a_move_invalidates_what_other_processes_know(store_backend: Backend) -> None:
    """A move brings rows back into context; another process's KnownContext, which assumes
    rows only ever leave it (store/known_context.py), must not be used after it."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await exchange(s, agent.pk, conv.pk, "t1", "hi", "hello")  # 1, 2
        old = await exchange(s, agent.pk, conv.pk, "t2", "q", "r", under=first)  # 3, 4
        await exchange(s, agent.pk, conv.pk, "t3", "q'", "r'", under=first)  # 5, 6
        other = store_backend.store()
        await other.open()
        try:
            state = await other.load_turn_state(agent.pk, conv.pk)
            known = KnownContext(state.epoch, state.conversation.created_at,
                                 tuple(state.context), state.left_context)
            assert [m.seq for m in known.messages] == [1, 2, 5, 6]
            # rows 3-4 back, 5-6 out: as many in context up to seq 6 as before
            await exchange(s, agent.pk, conv.pk, "t4", "more", "ok", under=old, move=True)
            again = await other.load_turn_state(agent.pk, conv.pk, known)
            assert [m.seq for m in again.context] == [1, 2, 3, 4, 7, 8]
            assert again.epoch != state.epoch
        finally:
            await other.close()

    store_backend.run(body)
