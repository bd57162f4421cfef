"""The web inspector (/ui) in a real headless Chromium, end to end.

memproxy runs for real (uvicorn, SQLite, an API key) in front of the scripted fake upstream.
The official openai SDK gives the agent a first turn with an internal memory step and a second
conversation with an edited (superseded) message. Then tests/browser/inspector.mjs drives the
page with playwright-core: key entry, agents list, block edit with the counter (and its red
over-limit state), history and undo, transcripts with memory steps and superseded messages,
search, passages, the context bar, and a screenshot. Finally the SDK sends another turn and
the prompt the upstream received must carry the text typed into the browser.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.browser import browser_env

SCRIPT = Path(__file__).resolve().parent / "inspector.mjs"
RUN_TIMEOUT_S = 240
TENANT = "acme"
AGENT = "ada-ui"
# Distinctive, multi-line, and full of characters that markup would swallow: the page must
# show it as text and store it verbatim.
BLOCK_TEXT = 'Name: Ada Lovelace\nFavourite colour: ultramarine-7Q <b>bold?</b> & "quoted"'
MIN_SCREENSHOT_BYTES = 20_000



def _system_text(body: dict) -> str:
    return "\n".join(str(m.get("content") or "") for m in body["messages"]
                     if m.get("role") == "system")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_inspector_in_headless_chromium(make_proxy, fake_upstream, tmp_path: Path) -> None:
    chromium = browser_env.chromium()
    browser_env.node()  # a missing node or playwright-core skips (or fails in CI) here
    key = f"sk-inspector-{secrets.token_hex(8)}"
    proxy = make_proxy({"auth": {"keys": {key: TENANT}}})

    # A first turn in "default": "My name is X" makes the model call core_memory_append, an
    # internal step the client never sees.
    default = proxy.client(api_key=key, base_url=f"{proxy.url}/agents/{AGENT}/v1")
    first = default.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "My name is Ada"}])
    assert first.choices[0].message.content == "Got it, I'll remember that."

    # A chat-UI style conversation whose last user message is edited: the old message and
    # its reply become superseded.
    edits = proxy.client(api_key=key,
                         base_url=f"{proxy.url}/agents/{AGENT}/conversations/edits/v1")
    hello = {"role": "user", "content": "Hello there"}
    reply = edits.chat.completions.create(model="gpt-4o-mini", messages=[hello])
    echoed = {"role": "assistant", "content": reply.choices[0].message.content}
    for text in ("Hi again", "Hi once more"):
        edits.chat.completions.create(
            model="gpt-4o-mini", messages=[hello, echoed, {"role": "user", "content": text}])

    screenshot = tmp_path / "inspector.png"
    env = {
        "MEMPROXY_URL": proxy.url,
        "MEMPROXY_KEY": key,
        "MEMPROXY_AGENT": AGENT,
        "MEMPROXY_BLOCK_TEXT": BLOCK_TEXT,
        "MEMPROXY_CHROMIUM": chromium,
    }
    summary = browser_env.run_script(SCRIPT, [str(screenshot)], env, RUN_TIMEOUT_S)
    assert summary["memorySteps"] >= 2
    assert summary["superseded"] == 2, summary
    assert summary["searchHits"] >= 1
    assert summary["passageAddedAndDeleted"] is True
    assert summary["revisionSources"][:2] == ["api", "tool:core_memory_append"], summary
    assert summary["counter"].startswith(f"{len(BLOCK_TEXT)} / ")

    # The screenshot is a real PNG of a real page, not an empty canvas.
    assert screenshot.is_file()
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > MIN_SCREENSHOT_BYTES, f"screenshot is only {len(data)} bytes"

    # The context bar showed the server's own numbers.
    with proxy.http(headers={"Authorization": f"Bearer {key}"}) as http:
        report = http.get(f"/v1/agents/{AGENT}/context").json()
        passages = http.get(f"/v1/agents/{AGENT}/passages").json()
        persona = http.get(f"/v1/agents/{AGENT}/blocks/persona").json()
    assert summary["window"] == report["window"]
    assert summary["contextParts"]["blocks"] == report["tokens"]["blocks"]
    assert passages["data"] == [], "the passage added in the page was deleted there too"
    assert persona["read_only"] is True, "the read-only switch saved in the page"

    # The next turn's prompt carries the block text typed into the browser, verbatim.
    before = len(fake_upstream.requests)
    answer = default.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is my name?"}])
    assert answer.choices[0].message.content == "Your name is Ada Lovelace."
    sent = fake_upstream.requests[before:]
    assert sent, "the upstream received no request"
    assert BLOCK_TEXT in _system_text(sent[0].json)
