"""The Vercel AI SDK's DEFAULT OpenAI model (`openai(model)`: the Responses API) against
memproxy at `…/v1` (issue #16; before it, `streamText` silently returned ""), on SQLite and
Postgres. tests/node/responses.mjs runs `generateText` and `streamText` with one client tool,
then a follow-up turn resending the first turn's messages; every Response object and event it
received is validated here against the OpenAI description (tests/responses_check.py). Node and
the npm packages are found as for tests/e2e/test_node_client.py (skipped without them unless
MEMPROXY_REQUIRE_NODE=1).
"""

from __future__ import annotations

import json
from typing import Any

from tests import secrets
from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import TOOL_PROMPT, dialogue
from tests.e2e.test_node_client import NODE_DIR, _node_with_sdk, run_node
from tests.responses_check import SpecLog, validate_node_exchanges

spec = rh.spec
SCRIPT = NODE_DIR / "responses.mjs"
AI_PACKAGE = NODE_DIR / "node_modules" / "@ai-sdk" / "openai" / "package.json"


def run_script(proxy: Any, spec: SpecLog) -> dict[str, Any]:
    node = _node_with_sdk(AI_PACKAGE)
    stdout = run_node(node, SCRIPT, {"MEMPROXY_BASE_URL": proxy.base_url,
                                     "MEMPROXY_API_KEY": secrets.CLIENT_KEY})
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True, summary
    validate_node_exchanges(spec, summary["exchanges"])
    return summary


def test_generate_text_and_stream_text_with_a_tool(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    summary = run_script(proxy, spec)
    generate, stream = summary["generate"], summary["stream"]
    assert generate == {"text": "Tool result: Order A17: shipped", "calls": ["A17"],
                        "steps": 2}, summary
    assert stream["text"] == stream["streamed"] == "Tool result: Order A17: delivered", summary
    assert stream["calls"] == ["A17"] and stream["steps"] == 2, summary

    creates = [e for e in summary["exchanges"] if e["method"] == "POST"]
    assert [e["status"] for e in creates[:4]] == [200, 200, 200, 200], creates
    assert [e["request"].get("stream", False) for e in creates[:4]] == [False, False, True, True]
    streamed = [s for s in spec.streams if s.events]
    assert len(streamed) >= 2 and all(s.types[-1] == "response.completed" for s in streamed)
    assert "response.function_call_arguments.done" in streamed[0].types
    assert "response.output_text.delta" in streamed[1].types
    assert len(spec.checked("Response")) >= 2

    # the upstream was shown each tool result after the call it answers
    bodies = fake_upstream.bodies()
    for body, result in ((bodies[1], "Order A17: shipped"), (bodies[3], "Order A17: delivered")):
        call = body["messages"][-2]["tool_calls"][0]
        assert call["function"]["name"] == "lookup_order"
        assert body["messages"][-1] == {**body["messages"][-1], "role": "tool",
                                        "tool_call_id": call["id"]}
        assert dialogue(body)[-1] == ("tool", result)
        assert dialogue(body)[0] == ("user", TOOL_PROMPT)


def test_a_follow_up_turn_resending_the_first_turns_messages(make_proxy, fake_upstream, spec):
    """The AI SDK sends the earlier assistant text back as an `item_reference` to the stored
    output item (store defaults to true): memproxy must resolve it, not refuse it."""
    proxy = make_proxy()
    summary = run_script(proxy, spec)
    assert summary["generate"]["text"] == "Tool result: Order A17: shipped", summary
    follow = summary["followUp"]
    assert follow == {"text": follow.get("text")} and follow["text"], (
        f"the follow-up turn failed: {follow}; it sent "
        f"{[e['request'] for e in summary['exchanges']][-1]}")
    assert dialogue(fake_upstream.last.json) == [
        ("user", TOOL_PROMPT), ("assistant", ""), ("tool", "Order A17: shipped"),
        ("assistant", "Tool result: Order A17: shipped"), ("user", "Thanks! Anything else?")]
