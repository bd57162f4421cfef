"""The official `openai` npm package drives memproxy (tests/node/conversation.mjs).

Needs `node` and `npm`. On a fresh clone `tests/node/node_modules` is missing: the test runs
`npm ci` itself (from the committed package-lock.json). Without node/npm, or when the install
fails, the test is skipped with the reason; CI sets `MEMPROXY_REQUIRE_NODE=1` (.ci/run), and
then it FAILS instead, so a broken install cannot pass as a skip. `MEMPROXY_TEST_NODE=skip`
skips it without looking for node (and fails it when node is required).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import secrets, storage
from tests.fakes import MEMORY_TOOLS

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "conversation.mjs"
SDK_PACKAGE = NODE_DIR / "node_modules" / "openai" / "package.json"
INSTALL_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60
AGENT = "node-agent"
CONVERSATION = "node-1"
REQUIRE_ENV = "MEMPROXY_REQUIRE_NODE"
SKIP_ENV = "MEMPROXY_TEST_NODE"


def _required() -> bool:
    """True when a missing node must fail the test instead of skipping it (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    """Skip with `reason` locally; fail with it when node is required."""
    if _required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so the Node SDK test may not be skipped)",
                    pytrace=False)
    pytest.skip(f"no Node SDK here: {reason} (see docs/testing.md)")


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _node_with_sdk(package: Path = SDK_PACKAGE) -> str:
    """The `node` executable, once tests/node/node_modules holds `package` (a package.json:
    the openai package unless another is given)."""
    if os.environ.get(SKIP_ENV, "").strip().lower() == "skip":
        _unavailable(f"{SKIP_ENV}=skip skips it explicitly")
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH (Node 20+ is needed for the Node SDK test)")
    if package.is_file():
        return node
    npm = shutil.which("npm")
    if npm is None:
        _unavailable(f"{package.parent} is missing and `npm` is not on PATH to install it")
    command = [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        _unavailable(f"`{' '.join(command)}` did not finish within {INSTALL_TIMEOUT_S} s; "
                     f"output:\n{_tail(str(exc.stdout or '') + str(exc.stderr or ''))}")
    except OSError as exc:
        _unavailable(f"`{' '.join(command)}` could not run: {exc}")
    if done.returncode != 0 or not package.is_file():
        _unavailable(f"`{' '.join(command)}` failed (exit {done.returncode}); "
                     f"output:\n{_tail(done.stdout + done.stderr)}")
    return node


def run_node(node: str, script: Path, env: dict[str, str], what: str = "") -> str:
    """Run `script` with `env` added to this environment; its stdout, or the test fails with
    its output (`what` names the SDK in the message)."""
    try:
        done = subprocess.run([node, str(script)], cwd=NODE_DIR, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {script.name} did not finish within {RUN_TIMEOUT_S} s; "
                    f"stdout: {exc.stdout!r}; stderr: {exc.stderr!r}", pytrace=False)
    assert done.returncode == 0, (
        f"node {script.name}{what} exited {done.returncode}\n"
        f"stderr:\n{_tail(done.stderr)}\nstdout:\n{_tail(done.stdout)}")
    return done.stdout


def test_official_node_sdk_drives_memproxy(make_proxy, fake_upstream):
    node = _node_with_sdk()
    sdk_version = json.loads(SDK_PACKAGE.read_text())["version"]
    proxy = make_proxy()
    stdout = run_node(node, SCRIPT, {
        "MEMPROXY_BASE_URL": proxy.base_url, "MEMPROXY_AGENT": AGENT,
        "MEMPROXY_API_KEY": secrets.CLIENT_KEY}, f" (openai {sdk_version})")
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True
    assert summary["sdk"] == sdk_version
    assert summary["remember"]["text"] == "Got it, I'll remember that."
    assert summary["remember"]["usage"]["total_tokens"] > 0
    assert summary["remember"]["headers"] == {"agent": AGENT, "conversation": CONVERSATION}
    assert summary["toolCall"]["name"] == "get_time"
    assert json.loads(summary["toolCall"]["arguments"]) == {"zone": "UTC"}
    assert summary["toolAnswer"] == "Tool result: 12:00"
    assert summary["recall"] == "Your name is Nodie."

    # the upstream saw the client's tool next to memproxy's, and the tool result
    sent_tools = {t["function"]["name"] for t in fake_upstream.requests[-2].json["tools"]}
    assert "get_time" in sent_tools and MEMORY_TOOLS <= sent_tools

    # what memproxy stored: each message once, the memory-tool steps hidden
    db = proxy.settings.database.url
    stored = storage.transcript(db, AGENT, CONVERSATION)
    shape = []
    for message in stored:
        calls = [c["function"]["name"] for c in message.data.get("tool_calls") or []]
        shape.append((message.role, storage.roles_and_texts([message])[0][1], calls))
    call_id = summary["toolCall"]["id"]
    assert shape == [
        ("user", "My name is Nodie", []),
        ("assistant", "Got it, I'll remember that.", []),
        ("user", 'Use tool get_time with {"zone": "UTC"}', []),
        ("assistant", "", ["get_time"]),
        ("tool", "12:00", []),
        ("assistant", "Tool result: 12:00", []),
        ("user", "What is my name?", []),
        ("assistant", "Your name is Nodie.", []),
    ], shape
    assert stored[3].data["tool_calls"][0]["id"] == call_id
    assert json.loads(stored[3].data["tool_calls"][0]["function"]["arguments"]) == {"zone": "UTC"}
    assert stored[4].data.get("tool_call_id") == call_id
    assert not any(m.superseded for m in stored)
    all_rows = storage.transcript(db, AGENT, CONVERSATION, visible_only=False,
                                  include_superseded=True)
    assert not any(m.superseded for m in all_rows), "a Node request superseded stored messages"
    assert "Name: Nodie" in storage.blocks(db, AGENT)["human"].value
