"""The inspector's views (issue #20 item 7) in a real headless Chromium, end to end.

memproxy runs for real (uvicorn, SQLite, an API key) in front of the scripted fake upstream.
The agent gets a long chat (more messages than one page), a chat-UI conversation with an
edited message (a superseded branch), and a long memory block changed in one line. Then
tests/browser/inspector_views.mjs drives the page with playwright-core: block history as
diffs, the transcript opened at its newest message with "Load older" and "Jump to start",
the branch marked and opened, the Context tab following the conversation picker, the raw next
request, and every view at 390 px wide without horizontal overflow. Screenshots go to the
test's tmp dir (their paths are printed). Finally the SDK sends the message typed into the
raw view and the upstream must receive exactly the body the page showed.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.browser import browser_env

SCRIPT = Path(__file__).resolve().parent / "inspector_views.mjs"
RUN_TIMEOUT_S = 300
TENANT = "acme"
AGENT = "ada-views"
LONG_TURNS = 40  # 80+ messages: more than the transcript's page of 50
RAW_MESSAGE = "What is my name?"
MODEL = "gpt-4o-mini"
# A long block (a wall of text as full before/after values) changed in one line.
LINES = [f"Fact {i}: the project note number {i} says something worth keeping." for i in range(45)]
BEFORE = "\n".join(LINES)
AFTER = BEFORE.replace("Fact 20: the project note number 20", "Fact 20: the CHANGED note 20")



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_inspector_views_in_headless_chromium(make_proxy, fake_upstream, tmp_path: Path) -> None:
    chromium = browser_env.chromium()
    browser_env.node()  # a missing node or playwright-core skips (or fails in CI) here
    key = f"sk-views-{secrets.token_hex(8)}"
    upstream_key = f"sk-upstream-{secrets.token_hex(8)}"
    proxy = make_proxy({"auth": {"keys": {key: TENANT}}, "upstream": {"api_key": upstream_key}})
    auth = {"Authorization": f"Bearer {key}"}

    default = proxy.client(api_key=key, base_url=f"{proxy.url}/agents/{AGENT}/v1")
    default.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}])
    long = proxy.client(api_key=key, base_url=f"{proxy.url}/agents/{AGENT}/conversations/long/v1")
    for i in range(LONG_TURNS):
        long.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Long chat note {i}"}])
    edits = proxy.client(api_key=key, base_url=f"{proxy.url}/agents/{AGENT}/conversations/edits/v1")
    hello = {"role": "user", "content": "Hello there"}
    reply = edits.chat.completions.create(model=MODEL, messages=[hello])
    echoed = {"role": "assistant", "content": reply.choices[0].message.content}
    for text in ("Hi again", "Hi once more"):  # the second edits the first: a branch
        edits.chat.completions.create(
            model=MODEL, messages=[hello, echoed, {"role": "user", "content": text}])
    with httpx.Client(base_url=proxy.url, headers=auth, timeout=30) as http:
        for value in (BEFORE, AFTER):
            assert http.put(f"/v1/agents/{AGENT}/blocks/notes",
                            json={"value": value}).status_code == 200
        # a second agent with a long id: the agents table must still fit a phone
        assert http.post("/v1/agents", json={
            "id": "an-agent-with-a-rather-long-identifier-for-small-screens"}).status_code == 201
        in_context = {c: http.get(f"/v1/agents/{AGENT}/context",
                                  params={"conversation": c}).json()["messages_in_context"]
                      for c in ("default", "long")}
    assert in_context["default"] != in_context["long"]

    shots = tmp_path / "shots"
    shots.mkdir()
    env = {
        "MEMPROXY_URL": proxy.url,
        "MEMPROXY_KEY": key,
        "MEMPROXY_AGENT": AGENT,
        "MEMPROXY_CHROMIUM": chromium,
        "MEMPROXY_SHOTS": str(shots),
        "MEMPROXY_EXPECT": json.dumps({"in_context": in_context, "long_turns": LONG_TURNS,
                                       "raw_message": RAW_MESSAGE}),
    }
    summary = browser_env.run_script(SCRIPT, [], env, RUN_TIMEOUT_S)
    assert summary["diff"]["inserted"] == ["CHANGED"] or "CHANGED" in "".join(
        summary["diff"]["inserted"]), summary["diff"]
    assert summary["transcript"]["pagesOlder"] >= 1
    assert summary["branch"]["superseded"] == 2
    assert summary["context"] == {"default": in_context["default"], "long": in_context["long"]}
    assert set(summary["phone"]) >= {"agents", "blocks", "conversations", "context", "chat"}
    for name, path in summary["screenshots"].items():
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        print(f"screenshot {name}: {path}")

    # The raw view showed exactly what the upstream now receives for that message.
    assert upstream_key not in json.dumps(summary["raw"])
    assert summary["rawNote"].startswith("Conversation default:")
    before = len(fake_upstream.requests)
    # named: the agent learned from "edits" that its client resends histories, so a request
    # naming no conversation would start a new chat (docs/conversation-tree.md)
    named = proxy.client(api_key=key,
                         base_url=f"{proxy.url}/agents/{AGENT}/conversations/default/v1")
    named.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": RAW_MESSAGE}])
    assert fake_upstream.requests[before].json == summary["raw"]
