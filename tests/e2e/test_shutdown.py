"""Graceful shutdown: on SIGTERM memproxy stops accepting connections, lets the turns in flight
(streams included) finish and persists them; past `[server] shutdown_timeout_s` it cancels
what is left, keeping the input so that a resend continues the turn.

The upstream's pace is set by the test (`UpstreamGate`), so nothing here depends on timing.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import openai
import pytest

from tests import secrets, storage
from tests.fakes import Reply
from tests.servers import ProcessHandle, UpstreamGate, run_memproxy_subprocess

MODEL = "gpt-4o-mini"
ANSWER = "one two three four five six seven eight nine ten"


@pytest.fixture
def switch(_upstream_server):
    _, switch = _upstream_server
    return switch


def gated(switch, fake_upstream, after_chunks: int) -> UpstreamGate:
    gate = UpstreamGate(fake_upstream.app, after_chunks=after_chunks)
    switch.target = gate
    return gate


def refuses_connections(proc: ProcessHandle) -> bool:
    """True once a new connection is refused (or closed unanswered while the listener
    closes): the server no longer takes new requests."""
    try:
        httpx.get(f"{proc.url}/health/liveliness", timeout=5)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return True
    return False


def exited_after_sigterm(proc: ProcessHandle) -> bool:
    """uvicorn finishes its graceful shutdown, then re-raises SIGTERM: -15 (or 0)."""
    return proc.proc.wait(30) in (0, -signal.SIGTERM)


def wait_until(condition, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def client(proc: ProcessHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=proc.base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
                         timeout=60)


def test_sigterm_lets_a_streaming_turn_finish_and_persists_it(database_url, fake_upstream,
                                                             switch):
    gate = gated(switch, fake_upstream, after_chunks=3)  # role, "one ", "two " get through
    fake_upstream.push(Reply(content=ANSWER))
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env={})
    try:
        stream = client(proc).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "count to ten"}], stream=True,
            extra_headers={"X-Agent-Id": "drain"})
        received: list[str] = []
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                received.append(delta)
                if len(received) == 1:  # mid-stream: the rest is still held upstream
                    proc.proc.send_signal(signal.SIGTERM)
                    wait_until(lambda: refuses_connections(proc), "new connections are refused")
                    assert proc.alive()
                    gate.release()
        assert "".join(received) == ANSWER
        assert exited_after_sigterm(proc)
    finally:
        gate.release()
        proc.stop()
    assert storage.roles_and_texts(storage.transcript(database_url, "drain")) == [
        ("user", "count to ten"), ("assistant", ANSWER)]
    assert storage.last_turn(database_url, "drain").status == "done"


def test_sigterm_lets_a_waiting_turn_finish_and_persists_it(database_url, fake_upstream,
                                                           switch):
    gate = gated(switch, fake_upstream, after_chunks=0)  # the whole answer is held
    fake_upstream.push(Reply(content=ANSWER))
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env={})
    result: dict[str, object] = {}
    request = threading.Thread(target=lambda: result.setdefault(
        "reply", client(proc).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "count to ten"}],
            extra_headers={"X-Agent-Id": "drain"})))
    try:
        request.start()
        assert gate.held.wait(15), "the turn never reached the upstream"
        proc.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(proc), "new connections are refused")
        assert proc.alive()
        gate.release()
        request.join(30)
        assert exited_after_sigterm(proc)
    finally:
        gate.release()
        proc.stop()
    assert result["reply"].choices[0].message.content == ANSWER
    assert storage.roles_and_texts(storage.transcript(database_url, "drain")) == [
        ("user", "count to ten"), ("assistant", ANSWER)]


def test_past_the_shutdown_timeout_the_turn_is_cancelled_and_can_be_resent(
        database_url, fake_upstream, switch):
    """Needs `serve` to pass `[server] shutdown_timeout_s` to uvicorn
    (`timeout_graceful_shutdown`, see `proxy.obs.logs.uvicorn_options`)."""
    gate = gated(switch, fake_upstream, after_chunks=0)  # never released while it runs
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    env = {"MEMPROXY_SERVER_SHUTDOWN_TIMEOUT_S": "1", "MEMPROXY_UPSTREAM_MAX_RETRIES": "0"}
    question = [{"role": "user", "content": "a question for a stopping server"}]
    proc = run_memproxy_subprocess(args, env=env)
    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            outcome["reply"] = client(proc).chat.completions.create(
                model=MODEL, messages=question, extra_headers={"X-Agent-Id": "cut"})
        except Exception as exc:  # the point: the server gave up on this request
            outcome["error"] = exc

    request = threading.Thread(target=ask)
    try:
        request.start()
        assert gate.held.wait(15), "the turn never reached the upstream"
        proc.proc.send_signal(signal.SIGTERM)
        try:
            proc.proc.wait(20)  # 1 s of grace, then the turn is cancelled and the process ends
        except Exception:
            pytest.fail("memproxy did not exit after shutdown_timeout_s; does `serve` pass "
                        "timeout_graceful_shutdown (proxy.obs.logs.uvicorn_options)?")
        request.join(30)
    finally:
        proc.stop()
        gate.release()
    assert "reply" not in outcome
    assert storage.roles_and_texts(storage.transcript(database_url, "cut")) == [
        ("user", "a question for a stopping server")]  # the input is kept, nothing else
    # marked failed before the store closed (so its lease was released as well)
    assert storage.last_turn(database_url, "cut").status == "failed"
    switch.target = fake_upstream.app
    with run_memproxy_subprocess(args, env={}) as again:
        reply = client(again).chat.completions.create(
            model=MODEL, messages=question,
            extra_headers={"X-Agent-Id": "cut", "x-stainless-retry-count": "1"})
    assert reply.choices[0].message.content.startswith("Echo: a question for a stopping server")
    assert storage.roles_and_texts(storage.transcript(database_url, "cut")) == [
        ("user", "a question for a stopping server"),
        ("assistant", reply.choices[0].message.content)]
