"""The Vercel AI SDK (`ai` + `@ai-sdk/openai`, from tests/node) running a client tool loop
twice without a conversation id against an agent with SDK-style history (issue #15, symptom 5).

The same check as tests/e2e/test_tool_loops.py, for the Node framework the issue reproduced it
with: tests/node/tool_loop.mjs runs `generateText` with one tool through `openai.chat(...)`
(Chat Completions), the agent named by the X-Agent-Id header, and prints every chat request it
sent; each run's tool returns a different text, and the upstream must be shown it and the
conversation's path, every run. Node and the npm packages are found as for
tests/e2e/test_node_client.py (skipped without them unless MEMPROXY_REQUIRE_NODE=1).
"""

from __future__ import annotations

import json

from tests import secrets
from tests.e2e.test_node_client import NODE_DIR, _node_with_sdk, run_node
from tests.e2e.test_tool_loops import run_twice, seed
from tests.prompt_check import ClientLog, Exchange

SCRIPT = NODE_DIR / "tool_loop.mjs"
AI_PACKAGE = NODE_DIR / "node_modules" / "@ai-sdk" / "openai" / "package.json"
AGENT = "vercel"


def run_program(node: str, proxy, log: ClientLog, result: str) -> str:
    """One run of tool_loop.mjs; its chat requests are added to `log` with the upstream
    requests each caused (here exactly one each: the scripted model answers these prompts
    without memory tools, so the upstream calls of the run pair with its requests in order)."""
    before = len(log.fake.requests)
    stdout = run_node(node, SCRIPT, {
        "MEMPROXY_BASE_URL": proxy.base_url, "MEMPROXY_AGENT": AGENT,
        "MEMPROXY_API_KEY": secrets.CLIENT_KEY, "TOOL_RESULT": result})
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True and summary["calls"] == ["A17"], summary
    upstream = [r.json for r in log.fake.requests[before:]]
    assert len(upstream) == len(summary["requests"]), (
        f"{len(summary['requests'])} client requests made {len(upstream)} upstream calls")
    for sent, shown in zip(summary["requests"], upstream, strict=True):
        headers = {"x-memproxy-conversation-id": sent["conversation"]}
        if sent["replayed"] is not None:
            headers["x-memproxy-replayed"] = sent["replayed"]
        log.exchanges.append(Exchange(sent["body"], [shown], sent["status"], headers))
    return summary["text"]


def test_vercel_ai_sdk_tool_loop_twice_without_a_conversation_id(make_proxy, fake_upstream):
    node = _node_with_sdk(AI_PACKAGE)
    proxy = make_proxy()
    log = ClientLog(fake_upstream)
    path = seed(proxy, log, AGENT)
    run_twice(lambda result: run_program(node, proxy, log, result), path, log)
