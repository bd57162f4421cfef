"""The inspector's Chat tab and its create/delete controls in a real headless Chromium, end to
end (docs/inspector.md).

memproxy runs for real (uvicorn, SQLite, an API key) in front of the scripted fake upstream,
which answers "My name is Ada" with a `core_memory_append` call and then, a few seconds later,
with its answer. tests/browser/inspector_chat.mjs drives the page with playwright-core: creates
an agent (model, two blocks, one read-only), creates a conversation from the chat panel, sends
the message and sees the memory step arrive (marked, the `human` block flagged) before the
answer, then the block refreshed and marked changed; a second turn with the agent's own model;
a third whose second model call fails (the memory step shown, then the error; Retry continues
the turn with the same otid);
creates and deletes a block, deletes the conversation and the agent (each delete asked first,
once refused). Every new view is saved as a screenshot under the test's tmp dir; the paths are
printed. The server's state is checked through the API at each step (in the script) and after.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.browser import browser_env
from tests.fakes import Fault, Reply

SCRIPT = Path(__file__).resolve().parent / "inspector_chat.mjs"
RUN_TIMEOUT_S = 240
TENANT = "acme"
AGENT = "ada-chat"
SECOND_STEP_DELAY_S = 3.0  # the answer's model call: the memory step is on the page before it
MIN_SCREENSHOT_BYTES = 10_000
SHOTS = ("create-agent", "chat-memory-step", "chat-answer", "chat-failed-turn", "new-block",
         "agents-after-delete")



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_chat_and_create_delete_in_headless_chromium(make_proxy, fake_upstream,
                                                     tmp_path: Path) -> None:
    chromium = browser_env.chromium()
    browser_env.node()  # a missing node or playwright-core skips (or fails in CI) here
    key = f"sk-inspector-{secrets.token_hex(8)}"
    proxy = make_proxy({"auth": {"keys": {key: TENANT}}, "upstream": {"max_retries": 0}})
    fake_upstream.push(
        # turn 1: the memory call, then (late) the scripted answer to its result
        Reply(tool_calls=[("core_memory_append", {"label": "human", "content": "Name: Ada"})]),
        Fault.delay(SECOND_STEP_DELAY_S),
        Fault.delay(0),  # turn 2: the scripted answer ("Your name is Ada.")
        # turn 3: an archival insert, then the model call after it fails; its retry is scripted
        Reply(tool_calls=[("archival_memory_insert", {"content": "the locker code is 4711"})]),
        Fault.http(500, "the model server fell over", type="server_error"))

    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = {"MEMPROXY_URL": proxy.url, "MEMPROXY_KEY": key,
           "MEMPROXY_AGENT": AGENT, "MEMPROXY_CHROMIUM": chromium}
    summary = browser_env.run_script(SCRIPT, [str(shots)], env, RUN_TIMEOUT_S)

    # created as typed: the model in settings, the blocks with their limits and flags
    assert sorted(summary["createdBlocks"]) == [
        ["human", 2000, False, ""], ["persona", 5000, True, "A patient butler. <b>not markup</b>"]]
    # the memory step was on the page while the answer's model call was still running
    assert summary["stepBeforeAnswer"] is True, summary
    assert summary["memorySteps"] == 2  # the call and its result
    assert summary["answerChunks"] > 1, "the answer streamed in, in pieces joined on the page"
    assert all(r.json["stream"] is True for r in fake_upstream.requests)  # stream_tokens
    assert summary["secondAnswer"] == "Your name is Ada."
    # a later step's failure: shown after the memory step; the retry continued the turn
    assert "the model server fell over" in summary["failedTurnError"]
    assert summary["retriedAnswer"] == "Got it, I'll remember that."
    assert summary["passagesAfterRetry"] == ["the locker code is 4711"]
    # reopened: user, memory call, result, answer, user, answer, then the retried turn's four
    assert (summary["reloadedRows"], summary["reloadedMemorySteps"]) == (10, 4), summary
    assert summary["newBlock"] == ["likes tea", 100, True]
    assert summary["blockDeleted"] is True
    assert summary["conversationsLeft"] == []
    assert summary["agentDeleted"] is True and summary["agentListedAfterDelete"] == 0

    # the turns went through Letta's step stream with the agent's model, in "first-chat"
    assert [r.json["model"] for r in fake_upstream.requests] == ["gpt-4o-mini"] * 7
    with proxy.http(headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.get(f"/v1/agents/{AGENT}").status_code == 404

    for name in SHOTS:
        path = Path(summary["screenshots"][name])
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > MIN_SCREENSHOT_BYTES, path
        print(f"screenshot {name}: {path}")
