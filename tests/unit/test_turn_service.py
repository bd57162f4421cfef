"""The stateful turn pipeline (`proxy.turn`) against an in-memory store and an in-process
upstream: what each kind of client request stores, what the upstream is sent, how failures
and retries leave the conversation. No database, no network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.core.reconcile import Action
from proxy.turn import Replay, TurnSession
from proxy.turn.observers import FinishedTurn
from proxy.upstream import UpstreamError
from tests.fakes.scripted_model import Reply, scripted_model
from tests.fakes.turns import (
    TurnHarness,
    assistant,
    drain,
    numbered_replies,
    reply_text,
    user,
)


def roles_and_texts(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in messages]


def prompt_of(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """The conversation part of an upstream request: its messages after the system message."""
    return roles_and_texts([m for m in body["messages"] if m["role"] != "system"])


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_style_appends_and_the_next_prompt_holds_the_first_exchange(stream: bool) -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.turn([user("hello there")], stream=stream)
        second = await h.turn([user("and now?")], stream=stream)
        assert second.decision.action is Action.APPEND
        assert prompt_of(h.upstream.requests[1]) == [
            ("user", "hello there"), ("assistant", reply_text(first)), ("user", "and now?")]
        assert roles_and_texts(h.visible()) == [
            ("user", "hello there"), ("assistant", reply_text(first)),
            ("user", "and now?"), ("assistant", reply_text(second))]
        assert [m.seq for m in h.rows()] == [1, 2, 3, 4]
        assert [h.store.turns[t].status for t in (first.turn_id, second.turn_id)] == [
            "done", "done"]
        # only new messages, to a conversation with replies: an SDK-style client
        assert h.conversation().resends_history is False

    asyncio.run(scenario())


def test_a_chat_ui_resending_its_history_stores_nothing_twice() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.turn([user("hi")], conversation="c1")
        history = [user("hi"), assistant(reply_text(first)), user("how are you?")]
        second = await h.turn(history, conversation="c1")
        assert second.decision.action is Action.APPEND
        assert [m["content"] for m in second.decision.new_input] == ["how are you?"]
        assert roles_and_texts(h.visible("c1")) == [
            ("user", "hi"), ("assistant", reply_text(first)),
            ("user", "how are you?"), ("assistant", reply_text(second))]
        assert len(h.rows("c1")) == 4  # nothing superseded, nothing stored twice
        assert prompt_of(h.upstream.requests[1]) == roles_and_texts(history)
        assert h.conversation("c1").resends_history is True

    asyncio.run(scenario())


def test_regenerate_supersedes_the_old_reply() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        h.upstream.responder = numbered_replies(h.upstream)
        await h.turn([user("q1")], conversation="c")
        history = [user("q1"), assistant("reply 1"), user("q2")]
        await h.turn(history, conversation="c")
        again = await h.turn(history, conversation="c")  # the client regenerates "reply 2"
        assert again.decision.action is Action.REGENERATE
        assert roles_and_texts(h.visible("c")) == [
            ("user", "q1"), ("assistant", "reply 1"), ("user", "q2"), ("assistant", "reply 3")]
        old = [m for m in h.rows("c") if m.superseded]
        assert [(m.data["content"], m.in_context) for m in old] == [("reply 2", False)]
        assert prompt_of(h.upstream.requests[-1]) == roles_and_texts(history)

    asyncio.run(scenario())


def test_an_edit_branches_and_supersedes_the_edited_message_and_its_reply() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        h.upstream.responder = numbered_replies(h.upstream)
        await h.turn([user("q1")], conversation="c")
        await h.turn([user("q1"), assistant("reply 1"), user("q2")], conversation="c")
        edited = [user("q1"), assistant("reply 1"), user("q2, edited")]
        branch = await h.turn(edited, conversation="c")
        assert branch.decision.action is Action.BRANCH
        assert roles_and_texts(h.visible("c")) == [
            ("user", "q1"), ("assistant", "reply 1"),
            ("user", "q2, edited"), ("assistant", "reply 3")]
        assert [m.data["content"] for m in h.rows("c") if m.superseded] == ["q2", "reply 2"]
        assert prompt_of(h.upstream.requests[-1]) == roles_and_texts(edited)

    asyncio.run(scenario())


def test_an_upstream_5xx_fails_the_turn_keeping_its_input_and_a_resend_continues_it() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("first")])
        h.upstream.push(UpstreamError(503, "overloaded"))
        session = await h.start([user("second")])
        assert isinstance(session, TurnSession)
        with pytest.raises(UpstreamError):
            await drain(session)
        failed = h.store.turns[session.turn_id]
        assert failed.status == "failed" and h.store.errors[session.turn_id]["status"] == 503
        assert [m.data["content"] for m in h.rows() if m.turn_id == session.turn_id] == ["second"]
        assert h.visible()[-1] == user("second")  # kept, unanswered

        resent = await h.turn([user("second")])
        assert resent.decision.action is Action.CONTINUE
        assert resent.turn_id == session.turn_id and "reopen_turn" in h.store.calls
        assert h.store.turns[session.turn_id].status == "done"
        assert [m["content"] for m in h.visible()].count("second") == 1
        assert prompt_of(h.upstream.requests[-1]).count(("user", "second")) == 1

    asyncio.run(scenario())


def test_an_upstream_400_discards_the_turns_input() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.turn([user("first")])
        before = [m.data for m in h.rows()]
        h.upstream.push(UpstreamError(400, "bad request", type="invalid_request_error"))
        session = await h.start([user("rejected")])
        with pytest.raises(UpstreamError):
            await drain(session)
        assert h.store.turns[session.turn_id].status == "failed"
        assert "discard_turn" in h.store.calls and "fail_turn" not in h.store.calls
        assert h.visible() == before  # as it was before the request
        rejected = h.rows()[-1]
        assert (rejected.data, rejected.superseded, rejected.in_context) == (
            user("rejected"), True, False)

        await h.turn([user("next")])
        assert prompt_of(h.upstream.requests[-1]) == [
            ("user", "first"), ("assistant", reply_text(first)), ("user", "next")]

    asyncio.run(scenario())


@pytest.mark.parametrize("marker", [{"idempotency_key": "key-1"}, {"retry": True}])
def test_a_retry_of_a_finished_turn_is_replayed_without_an_upstream_call(
    marker: dict[str, Any],
) -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first_marker = {k: v for k, v in marker.items() if k != "retry"}
        session = await h.turn([user("hello")], **first_marker)
        calls, rows = len(h.upstream.requests), len(h.rows())

        replay = await h.start([user("hello")], **marker)
        assert isinstance(replay, Replay)
        assert replay.response == session.response and replay.turn.turn_id == session.turn_id
        assert (replay.agent_id, replay.conversation_id) == ("agent-1", "default")
        assert len(h.upstream.requests) == calls and len(h.rows()) == rows
        assert h.store.calls.count("begin_turn") == 1
        # the lock was released: the conversation goes on
        await h.turn([user("next")])

    asyncio.run(scenario())


def test_a_tool_loop_run_twice_with_identical_calls_continues_its_own_run() -> None:
    """Run 2 makes the same call with the same rejected arguments and gets the same error as
    run 1: only the call ids differ. Its follow-ups continue run 2, never run 1's past."""
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("earlier")])
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        for run in range(2):
            h.upstream.push(Reply(tool_calls=[("lookup", {"order": "A17"})]))
            asked = await h.turn([user("look it up")], tools=tools)
            bad = asked.response["choices"][0]["message"]
            error = {"role": "tool", "tool_call_id": bad["tool_calls"][0]["id"],
                     "content": "error: field order_id required"}
            h.upstream.push(Reply(tool_calls=[("lookup", {"order_id": "A17"})]))
            again = await h.turn([user("look it up"), bad, error], tools=tools)
            good = again.response["choices"][0]["message"]
            result = {"role": "tool", "tool_call_id": good["tool_calls"][0]["id"],
                      "content": f"RESULT-{run}"}
            await h.turn([user("look it up"), bad, error, good, result], tools=tools)
            sent = [m for m in h.upstream.requests[-1]["messages"] if m["role"] != "system"]
            assert [m.get("tool_call_id") for m in sent[-4:] if m["role"] == "tool"] == [
                bad["tool_calls"][0]["id"], good["tool_calls"][0]["id"]]
            assert sent[-1] == result
        texts = [m.get("content") for m in h.visible()]
        assert texts.count("RESULT-0") == 1 and texts.count("RESULT-1") == 1  # both runs kept

    asyncio.run(scenario())


def test_a_retry_replays_only_the_last_turn_never_an_older_identical_one() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("What is my name?")])
        await h.turn([user("My name is Kim")])
        again = await h.start([user("What is my name?")], retry=True)
        assert isinstance(again, TurnSession)  # turn 1 is not where this request stands
        await drain(again)
        assert [m["content"] for m in h.visible() if m["role"] == "user"] == [
            "What is my name?", "My name is Kim", "What is my name?"]

    asyncio.run(scenario())


def test_an_unmarked_resend_is_replayed_only_when_the_answer_never_arrived() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.turn([user("Remember DUPFACT42")])
        asked_again = await h.start([user("Remember DUPFACT42")])
        assert isinstance(asked_again, TurnSession)  # its answer arrived: asked again
        await drain(asked_again)
        h.service.undelivered.add(asked_again)  # this answer never reached the client
        resent = await h.start([user("Remember DUPFACT42")])
        assert isinstance(resent, Replay) and resent.turn.turn_id == asked_again.turn_id
        assert first.turn_id != asked_again.turn_id
        h.settings.agent.resend_window_s = 0  # turned off: a resend is a new turn
        h.service.undelivered.add(asked_again)
        new = await h.start([user("Remember DUPFACT42")])
        assert isinstance(new, TurnSession)
        await drain(new)

    asyncio.run(scenario())


@pytest.mark.parametrize("stream", [False, True])
def test_a_memory_tool_call_changes_the_block_stored_by_finish_turn(stream: bool) -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        seen: list[str] = []

        def responder(body: dict[str, Any]) -> Reply:
            # what the store holds while the turn runs: edits are written only at the end
            agent = next(iter(h.store.agents))
            seen.append(next(b.value for b in h.store.blocks[agent] if b.label == "human"))
            return scripted_model(body)

        h.upstream.responder = responder
        session = await h.turn([user("My name is Ada")], stream=stream)
        assert seen == ["", ""]
        agent_pk = session.agent.pk
        human = next(b for b in h.store.blocks[agent_pk] if b.label == "human")
        assert human.value == "Name: Ada"
        assert [(r.label, r.new_value, r.source, r.turn_id) for r in h.store.revisions] == [
            ("human", "Name: Ada", "tool:core_memory_append", session.turn_id)]
        stored = [(m.role, m.visible) for m in h.rows()]
        assert stored == [("user", True), ("assistant", False), ("tool", False),
                          ("assistant", True)]

        await h.turn([user("What is my name?")], stream=stream)
        assert "Name: Ada" in h.upstream.requests[-1]["messages"][0]["content"]
        assert h.visible()[-1] == assistant("Your name is Ada.")

    asyncio.run(scenario())


class Recorder:
    """An observer that notes its name and what the store says of the turn when called."""

    def __init__(self, name: str, log: list[tuple[str, str]], h: TurnHarness) -> None:
        self.name, self.log, self.h = name, log, h

    async def turn_finished(self, turn: FinishedTurn) -> None:
        self.log.append((self.name, self.h.store.turns[turn.turn_id].status))


def test_observers_run_in_order_after_the_turn_is_stored() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        log: list[tuple[str, str]] = []
        defaults = list(h.service.observers)
        h.service.observers[:] = [Recorder("first", log, h), *defaults,
                                  Recorder("last", log, h)]
        await h.turn([user("hello")])
        assert log == [("first", "done"), ("last", "done")]

    asyncio.run(scenario())


def test_a_resent_history_without_a_conversation_id_finds_its_conversation_by_its_path(
) -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.turn([user("hi")])  # no conversation named: "default"
        reply = assistant(reply_text(first))
        second = await h.turn([user("hi"), reply, user("more")])  # still no conversation id
        assert second.conversation.conversation_id == "default"
        assert len(h.store.conversations) == 1
        assert roles_and_texts(h.visible()) == [
            ("user", "hi"), ("assistant", reply["content"]),
            ("user", "more"), ("assistant", reply_text(second))]

    asyncio.run(scenario())


def test_a_tool_loop_follow_up_without_a_conversation_id_continues_its_own_turn() -> None:
    """An SDK-style agent with history; a framework's follow-up (user, assistant tool call,
    tool result) continues the path it belongs to, on every run of the same program."""
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("earlier")])
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        for run in range(2):
            h.upstream.push(Reply(tool_calls=[("lookup", {"q": "x"})]))
            asked = await h.turn([user("look it up")], tools=tools)
            call = asked.response["choices"][0]["message"]
            result = {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"],
                      "content": f"RESULT-{run}"}
            done = await h.turn([user("look it up"), call, result], tools=tools)
            assert done.conversation.conversation_id == "default"
            sent = [m for m in h.upstream.requests[-1]["messages"] if m["role"] != "system"]
            assert sent[-1] == result  # the real result, not "(no result ...)"
            assert sent[-2]["tool_calls"] == call["tool_calls"] and sent[-3] == user("look it up")
        assert len(h.store.conversations) == 1

    asyncio.run(scenario())
