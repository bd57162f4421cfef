"""Letta's own Python SDK (`letta-client`, when installed) against memproxy's agents-as-a-service
endpoint (docs/agents-as-a-service.md): it sends its request shapes and parses the answers into
its own models, on both backends. `letta-client` is in the `test` extra; the test is skipped
only where that extra was not installed."""

from __future__ import annotations

import pytest

letta_client = pytest.importorskip("letta_client")

MODEL = "gpt-4o-mini"


@pytest.fixture
def letta(make_proxy):
    server = make_proxy()
    return letta_client.Letta(base_url=server.url, api_key="unused", max_retries=0)


def test_letta_sdk_create_stream_and_otid_retry(letta, fake_upstream):
    sent = letta.agents.messages.create(
        agent_id="ada", messages=[{"role": "user", "content": "My name is Ada", "otid": "o-1"}],
        override_model=MODEL)
    assert [m.message_type for m in sent.messages] == [
        "tool_call_message", "tool_return_message", "assistant_message"]
    assert sent.messages[0].tool_call.name == "core_memory_append"
    assert sent.messages[1].status == "success"
    assert sent.stop_reason.stop_reason == "end_turn" and sent.usage.step_count == 2
    calls = len(fake_upstream.requests)
    again = letta.agents.messages.create(
        agent_id="ada", messages=[{"role": "user", "content": "My name is Ada", "otid": "o-1"}],
        override_model=MODEL)
    assert again.messages == sent.messages and len(fake_upstream.requests) == calls

    events = list(letta.agents.messages.create(agent_id="ada", input="What is my name?",
                                               streaming=True))
    assert [e.message_type for e in events] == [
        "assistant_message", "stop_reason", "usage_statistics"]
    assert events[0].content == "Your name is Ada."


def test_letta_sdk_streams_steps_and_tokens(letta, fake_upstream):
    """Letta's SDK reading the step stream: the memory step's call and result come before the
    answer, and with `stream_tokens` the answer arrives in pieces of one message id."""
    events = list(letta.agents.messages.create(
        agent_id="bea", input="My name is Bea", streaming=True, stream_tokens=True,
        override_model=MODEL))
    kinds = [e.message_type for e in events]
    assert kinds[:2] == ["tool_call_message", "tool_return_message"], kinds
    pieces = [e for e in events if e.message_type == "assistant_message"]
    assert len(pieces) > 1 and len({p.id for p in pieces}) == 1
    assert "".join(p.content for p in pieces) == "Got it, I'll remember that."
    assert kinds[-2:] == ["stop_reason", "usage_statistics"]
    assert all(r.json["stream"] is True for r in fake_upstream.requests)
