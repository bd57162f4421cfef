"""Connection hygiene (issue #21.4): a client that sends its request head or body too slowly is
dropped after `[server] header_timeout_s` / `body_timeout_s`, counted in
`memproxy_connections_dropped` and logged once at INFO without content; normal requests,
kept-alive connections and long streaming responses are untouched.

Raw sockets against a real `memproxy serve` process (the deadlines live in the HTTP protocol
that `serve` hands to uvicorn, api/connections.py). The deadlines are 1 s here; each test waits
past them, and a socket read times out at 20 s so a connection never dropped fails the test.
"""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import openai
import pytest

from tests import secrets
from tests.fakes import Reply
from tests.servers import ProcessHandle, UpstreamGate, run_memproxy_subprocess

MODEL = "gpt-4o-mini"
DEADLINES = {"MEMPROXY_SERVER_HEADER_TIMEOUT_S": "1", "MEMPROXY_SERVER_BODY_TIMEOUT_S": "1"}
SECRET_TEXT = "the-hidden-payload-7q"


@pytest.fixture
def switch(_upstream_server):
    _, switch = _upstream_server
    return switch


@pytest.fixture
def proc(database_url, fake_upstream):
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    handle = run_memproxy_subprocess(args, env=DEADLINES)
    yield handle
    handle.stop()


def connect(proc: ProcessHandle) -> socket.socket:
    sock = socket.create_connection((proc.host, proc.port), timeout=20)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (EOF or reset) without answering."""
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


def dropped(proc: ProcessHandle, reason: str) -> float:
    text = httpx.get(f"{proc.url}/metrics", timeout=10).text
    match = re.search(
        rf'^memproxy_connections_dropped_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_half_sent_heads_are_dropped_and_counted(proc):
    heads = []
    for _ in range(40):
        sock = connect(proc)
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Note: {SECRET_TEXT}"
                     .encode())
        heads.append(sock)
    silent = connect(proc)  # a connection that never sends a byte
    try:
        assert all(closed_by_server(sock) for sock in [*heads, silent])
    finally:
        for sock in [*heads, silent]:
            sock.close()
    assert dropped(proc, "header_timeout") >= 41
    assert httpx.get(f"{proc.url}/health/liveliness", timeout=10).status_code == 200
    proc.stop()
    lines = [line for line in proc.output().splitlines() if "dropped a connection" in line]
    assert len(lines) >= 41 and all("INFO" in line and "header timeout" in line
                                    for line in lines)
    assert SECRET_TEXT not in proc.output()


def test_a_trickled_head_is_dropped_even_while_bytes_keep_coming(proc):
    sock = connect(proc)
    try:
        sock.sendall(b"GET /health/liveliness HTTP/1.1\r\n")
        sock.settimeout(0.25)
        closed = False
        for _ in range(40):  # a header line every 0.25 s: never idle, never complete
            try:
                sock.sendall(b"X-A: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        assert closed
    finally:
        sock.close()
    assert dropped(proc, "header_timeout") >= 1


def test_a_slow_body_is_dropped_and_counted(proc, fake_upstream):
    sock = connect(proc)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                     b'{"model": "gpt-4o-mini", ')
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert dropped(proc, "body_timeout") == 1
    assert fake_upstream.requests == []
    proc.stop()
    assert "body timeout" in proc.output()
    assert "Traceback" not in proc.output()
    assert "ERROR" not in proc.output()
    access = [line for line in proc.output().splitlines() if "path=/v1/chat/completions" in line]
    assert len(access) == 1 and "status=499" in access[0] and " INFO " in access[0]


def test_a_client_leaving_mid_body_is_a_499_at_info(proc, fake_upstream):
    """Issue #21.6: a disconnect while sending the body is the client's doing, not a 500."""
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/agents"):
        sock = connect(proc)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     "\r\nContent-Length: 500\r\n\r\n{\"model\": ".encode())
        time.sleep(0.2)  # the handler is waiting for the rest of the body
        sock.close()
    assert fake_upstream.requests == []
    time.sleep(0.5)
    proc.stop()
    output = proc.output()
    assert "Traceback" not in output and "ERROR" not in output
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/agents"):
        lines = [line for line in output.splitlines() if f"path={path} " in line]
        assert len(lines) == 1 and "status=499" in lines[0] and " INFO " in lines[0], lines


def test_kept_alive_connections_and_normal_requests_are_untouched(proc, fake_upstream):
    fake_upstream.push(Reply(content="first"), Reply(content="second"))
    with httpx.Client(base_url=proc.base_url, timeout=20) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert http.post("/chat/completions", json=body).status_code == 200
        time.sleep(2.5)  # idle past both deadlines, within uvicorn's 5 s keep-alive
        again = http.post("/chat/completions", json=body)
        assert again.status_code == 200
        assert again.json()["choices"][0]["message"]["content"] == "second"
    assert dropped(proc, "header_timeout") == 0
    assert dropped(proc, "body_timeout") == 0


def test_a_long_streaming_response_is_never_cut(database_url, fake_upstream, switch):
    gate = UpstreamGate(fake_upstream.app, after_chunks=2)
    switch.target = gate
    answer = "one two three four five six"
    fake_upstream.push(Reply(content=answer))
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env=DEADLINES)
    try:
        client = openai.OpenAI(base_url=proc.base_url, api_key=secrets.CLIENT_KEY,
                               max_retries=0, timeout=30)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True,
            extra_headers={"X-Agent-Id": "slow-stream"})
        received = []
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                received.append(delta)
                if len(received) == 1:
                    assert gate.held.wait(15)
                    time.sleep(2.5)  # the answer stalls past both deadlines
                    gate.release()
        assert "".join(received) == answer
        assert dropped(proc, "header_timeout") == 0
        assert dropped(proc, "body_timeout") == 0
    finally:
        gate.release()
        proc.stop()


def test_connections_past_the_cap_are_closed(database_url, fake_upstream):
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env={"MEMPROXY_SERVER_MAX_CONNECTIONS": "3"})
    held = []
    try:
        held = [connect(proc) for _ in range(3)]
        time.sleep(0.2)
        extra = connect(proc)
        held.append(extra)
        assert closed_by_server(extra)
        for sock in held[:3]:
            sock.close()
        held = []
        assert httpx.get(f"{proc.url}/health/liveliness", timeout=10).status_code == 200
        assert dropped(proc, "too_many_connections") >= 1
    finally:
        for sock in held:
            sock.close()
        proc.stop()


def test_a_pipelined_body_the_server_is_not_reading_yet_is_not_dropped(database_url,
                                                                      fake_upstream, switch):
    """The body deadline is for clients slow to send: a large body that waits in the kernel
    because uvicorn paused reading (a pipelined request behind a long stream) is not theirs."""
    gate = UpstreamGate(fake_upstream.app, after_chunks=2,
                        hold_if=lambda headers: headers.get("x-hold") == "1")
    switch.target = gate
    fake_upstream.push(Reply(content="one two three"), Reply(content="second"))
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env=DEADLINES)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)  # the kernel holds little
    sock.connect((proc.host, proc.port))
    try:
        first = json.dumps({"model": MODEL, "stream": True,
                            "messages": [{"role": "user", "content": "count"}]}).encode()
        second = json.dumps({"model": MODEL, "x_pad": "p" * 3_000_000,
                             "messages": [{"role": "user", "content": "hi"}]}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Hold: 1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(first)).encode() + b"\r\n\r\n" + first)
        assert gate.held.wait(15)
        sock.settimeout(0.5)
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(second)).encode() + b"\r\n\r\n")
        pending = head + second
        deadline = time.monotonic() + 2.5  # past the 1 s body deadline, with the body waiting
        while time.monotonic() < deadline:
            try:
                sent = sock.send(pending)
                pending = pending[sent:]
            except (TimeoutError, BlockingIOError):
                pass
            if not pending:
                time.sleep(0.05)
        assert pending, "the kernel took the whole body: nothing waited"
        gate.release()
        sock.settimeout(20)
        sock.sendall(pending)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.count(b"HTTP/1.1 200") == 2, received[:2000]
        assert b"second" in received
        assert dropped(proc, "body_timeout") == 0
    finally:
        gate.release()
        sock.close()
        proc.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_leaving_while_its_turn_runs_is_a_499_at_info(database_url, fake_upstream,
                                                               switch, stream):
    """Issue #21.6: a client gone while the upstream answers (or mid-stream) is no error: no
    ERROR, no traceback, one access line at INFO. The turn still finishes (and is
    stored like any other), so its line says what was sent: the answer, to a closed socket."""
    gate = UpstreamGate(fake_upstream.app, after_chunks=2 if stream else 0)
    switch.target = gate
    fake_upstream.push(Reply(content="one two three four"))
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    proc = run_memproxy_subprocess(args, env={})
    try:
        body = json.dumps({"model": MODEL, "stream": stream,
                           "messages": [{"role": "user", "content": "count"}]}).encode()
        sock = connect(proc)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Agent-Id: gone\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert gate.held.wait(15)
        if stream:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()
        time.sleep(0.3)
        gate.release()
        deadline = time.monotonic() + 15
        while "path=/v1/chat/completions" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.1)
    finally:
        gate.release()
        proc.stop()
    output = proc.output()
    assert "Traceback" not in output and " ERROR " not in output, output
    lines = [line for line in output.splitlines() if "path=/v1/chat/completions" in line]
    assert len(lines) == 1 and " INFO " in lines[0]
    assert "status=499" in lines[0] or "status=200" in lines[0], lines
