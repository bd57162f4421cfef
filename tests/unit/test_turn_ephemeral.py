"""Temporary chats (proxy/turn/ephemeral.py) against the in-memory store and an in-process
upstream: memory is read (blocks in the prompt, searches), nothing is written, no edit tool is
offered, and an unknown agent is not created. No database, no network."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

import pytest

from proxy.config import ConfigError, IdentitySettings, load_settings
from proxy.core.identity import resolve_identity
from proxy.core.tools import MEMORY_SEARCH_TOOL_NAMES, MEMORY_TOOL_NAMES, memory_tools_for
from proxy.errors import ProxyError
from proxy.turn import TurnSession
from proxy.turn.ephemeral import READ_ONLY_NOTE, client_context
from tests.fakes.scripted_model import Reply
from tests.fakes.turns import TurnHarness, assistant, drain, reply_text, user

READS = {"get_agent", "get_blocks", "count_messages", "count_passages", "search_messages",
         "search_passages", "get_model_stats", "message_neighbours"}


def offered(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or []}


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


async def ephemeral_turn(h: TurnHarness, messages, **options) -> TurnSession:
    request = h.request(messages, **options)
    request.identity = dataclasses.replace(request.identity, ephemeral=True)
    session = await h.service.start(request, api_key=None)
    assert isinstance(session, TurnSession)
    await drain(session)
    return session


def stored_state(h: TurnHarness) -> dict[str, Any]:
    store = h.store
    return copy.deepcopy({k: getattr(store, k) for k in (
        "agents", "blocks", "conversations", "heads", "messages", "turns", "passages",
        "revisions")})


@pytest.mark.parametrize("stream", [False, True])
def test_memory_is_read_and_nothing_is_written(stream: bool) -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("My name is Ada")], conversation="chat-1")
        await h.turn([user("Remember in archive: the locker code is 4711")],
                     conversation="chat-1")
        before, calls = stored_state(h), len(h.store.calls)

        named = await ephemeral_turn(h, [user("What is my name?")],
                                     conversation="temporary:x", stream=stream)
        assert reply_text(named) == "Your name is Ada."
        prompt = system_text(h.upstream.requests[-1])
        assert "Name: Ada" in prompt and READ_ONLY_NOTE in prompt
        assert offered(h.upstream.requests[-1]) == set(MEMORY_SEARCH_TOOL_NAMES)

        found = await ephemeral_turn(h, [user("Search archive: locker")],
                                     conversation="temporary:x", stream=stream)
        assert "4711" in reply_text(found)
        recalled = await ephemeral_turn(h, [user("Search history: name is Ada")],
                                        conversation="temporary:x", stream=stream)
        assert "My name is Ada" in reply_text(recalled)
        # the model cannot edit: the tool is not offered...
        refused = await ephemeral_turn(h, [user("My name is Bob")],
                                       conversation="temporary:x", stream=stream)
        assert reply_text(refused) == "Tool core_memory_append is unavailable."

        assert stored_state(h) == before
        assert set(h.store.calls[calls:]) <= READS, h.store.calls[calls:]
        headers = named.headers()
        assert headers["x-memproxy-ephemeral"] == "true"
        assert headers["x-memproxy-conversation-id"] == "temporary:x"

    asyncio.run(scenario())


def test_an_edit_the_model_makes_anyway_is_not_applied() -> None:
    """A model that calls an edit tool it was not offered gets an error and changes nothing."""
    async def scenario() -> None:
        h = TurnHarness.create()
        await h.turn([user("My name is Ada")])
        h.upstream.push(Reply(tool_calls=[("core_memory_append",
                                            {"label": "human", "content": "Name: Eve"})]),
                        Reply(content="Done."))
        before = stored_state(h)
        session = await ephemeral_turn(h, [user("Call me Eve")], conversation="local:1")
        assert reply_text(session) == "Done."
        result = h.upstream.requests[-1]["messages"][-1]
        assert result["role"] == "tool" and "no tool named 'core_memory_append'" in result[
            "content"]
        assert stored_state(h) == before

    asyncio.run(scenario())


def test_an_unknown_agent_gets_the_default_blocks_and_is_not_created() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        h.service.default_blocks[1].value = "Prefers tea."
        session = await ephemeral_turn(h, [user("Search history: tea")], agent="newbie")
        assert "<human>" in system_text(h.upstream.requests[0])
        assert "Prefers tea." in system_text(h.upstream.requests[0])
        assert "No matching messages" in reply_text(session)
        assert h.store.agents == {} and h.store.conversations == {}
        assert set(h.store.calls) <= READS
        assert session.headers()["x-memproxy-conversation-id"] == "ephemeral"

    asyncio.run(scenario())


def test_the_prompt_holds_exactly_the_client_messages() -> None:
    """A chat UI resends its temporary chat's history: the prompt is that history, once."""
    async def scenario() -> None:
        h = TurnHarness.create()
        history = [user("The code word is gamma"), assistant("Noted."),
                   user("What is the code word?")]
        await ephemeral_turn(h, [{"role": "system", "content": "Be brief."}, *history],
                             conversation="temporary:y")
        body = h.upstream.requests[-1]
        assert [m for m in body["messages"] if m["role"] != "system"] == history
        assert "Be brief." in system_text(body)

    asyncio.run(scenario())


def test_a_client_tool_call_goes_back_to_the_client() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
        session = await ephemeral_turn(h, [user("Use tool get_time with {}")], tools=[tool])
        assert session.response["choices"][0]["finish_reason"] == "tool_calls"
        assert offered(h.upstream.requests[-1]) == {*MEMORY_SEARCH_TOOL_NAMES, "get_time"}
        assert h.store.agents == {}

    asyncio.run(scenario())


def test_only_system_messages_are_rejected_as_in_a_stateful_turn() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        with pytest.raises(ProxyError) as err:
            await ephemeral_turn(h, [{"role": "system", "content": "hi"}])
        assert err.value.status == 400 and err.value.param == "messages"
        assert h.store.calls == []

    asyncio.run(scenario())


# --- the pure parts -----------------------------------------------------------------------------
def test_read_only_tools_are_the_searches_and_the_clients_own() -> None:
    client = [{"type": "function", "function": {"name": "conversation_search"}},
              {"type": "function", "function": {"name": "get_time"}}]
    names = [t["function"]["name"] for t in memory_tools_for(client, read_only=True)]
    assert names == ["archival_memory_search", "conversation_search", "get_time"]
    everything = {t["function"]["name"] for t in memory_tools_for([])}
    assert everything == set(MEMORY_TOOL_NAMES)


@pytest.mark.parametrize(("roles", "input_from"), [
    ("u", 1), ("uau", 3), ("uaua", 4), ("uat", 3), ("uatau", 5), ("ua", 2)])
def test_the_turns_input_is_what_follows_the_last_reply(roles: str, input_from: int) -> None:
    names = {"u": "user", "a": "assistant", "t": "tool"}
    messages = [{"role": names[r], "content": f"m{i}"} for i, r in enumerate(roles)]
    context, first_input = client_context(messages, "turn-1", 0.0)
    assert first_input == input_from
    assert [m.seq for m in context] == list(range(1, len(roles) + 1))
    assert [m.data for m in context] == messages
    assert [m.turn_id == "turn-1" for m in context] == [
        i + 1 >= input_from for i in range(len(roles))]


DEFAULTS = IdentitySettings()


def resolve(headers=None, settings=DEFAULTS):
    return resolve_identity({"agent": "a"}, {k.lower(): v for k, v in (headers or {}).items()},
                            {}, settings)


@pytest.mark.parametrize(("headers", "ephemeral"), [
    ({"X-OpenWebUI-Chat-Id": "temporary:ypfMvzPsftDnm9pJAAAF"}, True),
    ({"X-Conversation-Id": "local:abc"}, True),
    ({"X-Memory": "ephemeral"}, True),
    ({"X-Memory": " Ephemeral ", "X-Conversation-Id": "chat-1"}, True),
    ({"X-Conversation-Id": "chat-temporary:1"}, False),
    ({"X-Conversation-Id": "temporary"}, False),
    ({}, False),
])
def test_temporary_chats_are_recognised(headers, ephemeral) -> None:
    assert resolve(headers).ephemeral is ephemeral


def test_the_prefixes_are_configurable_and_can_be_turned_off(tmp_path) -> None:
    off = IdentitySettings(ephemeral_conversation_prefixes=[])
    assert not resolve({"X-Conversation-Id": "temporary:1"}, off).ephemeral
    assert resolve({"X-Memory": "ephemeral"}, off).ephemeral
    env = {"MEMPROXY_IDENTITY_EPHEMERAL_CONVERSATION_PREFIXES": '["incognito-"]'}
    mine = load_settings(environ=env).identity
    assert resolve({"X-Conversation-Id": "incognito-7"}, mine).ephemeral
    path = tmp_path / "memproxy.toml"
    path.write_text("[identity]\nephemeral_conversation_prefixes = ['']\n")
    with pytest.raises(ConfigError, match="ephemeral_conversation_prefixes"):
        load_settings(path, environ={})
