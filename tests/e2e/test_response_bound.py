"""issue 21 item 2: a 30 MB upstream answer — text or tool-call arguments, streamed or not —
gives 502 `upstream_response_too_large` (an in-stream error event once the client's stream
started), the turn fails keeping only its input, the same request sent again works, and the
memproxy process's memory stays bounded. memproxy runs as a real subprocess (so its peak RSS
is its own, read from /proc) on both backends, against the scripted fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import secrets, storage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.openapi_check import validate_error
from tests.servers import ProcessHandle, run_memproxy_subprocess

MODEL = "gpt-4o-mini"
HUGE = 30 * 1024 * 1024
# Generous: the bound (4 MiB by default) is read at most, a few times over while decoding.
# Without it one 30 MB answer took memproxy past a gigabyte.
MAX_GROWTH_KB = 200 * 1024


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def memproxy(database_url: str, fake_upstream: FakeUpstream) -> Iterator[ProcessHandle]:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads peak RSS from /proc")
    handle = run_memproxy_subprocess(
        ["--database-url", database_url, "--upstream-url", fake_upstream.url],
        env={"MEMPROXY_UPSTREAM_MAX_RETRIES": "0"})
    yield handle
    handle.stop()


def send(proxy: ProcessHandle, agent: str, stream: bool, *, retry: bool = False
         ) -> tuple[int, dict | None, list[dict], str]:
    """(status, error body or event, chunks before it, text) of one stateful request."""
    headers = {"x-agent-id": agent, "authorization": f"Bearer {secrets.CLIENT_KEY}"}
    if retry:
        headers["x-stainless-retry-count"] = "1"
    body = {"model": MODEL, "stream": stream,
            "messages": [{"role": "user", "content": f"write a lot for {agent}"}]}
    with httpx.Client(timeout=60) as http, http.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=body, headers=headers) as response:
        raw = response.read()
        if response.status_code != 200:
            return response.status_code, json.loads(raw), [], ""
        if not stream:
            message = json.loads(raw)["choices"][0]["message"]
            return 200, None, [], message["content"] or ""
        chunks, error = [], None
        for line in raw.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if "error" in event:
                    error = event
                else:
                    chunks.append(event)
        assert raw.rstrip().endswith(b"data: [DONE]")
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.get("choices"))
        return 200, error, chunks, text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_30mb_answer_is_refused_and_memory_stays_bounded(memproxy, fake_upstream, database_url,
                                                           stream):
    status, error, _, text = send(memproxy, "warm", stream)  # start-up costs out of the way
    assert status == 200 and error is None and text
    before = peak_rss_kb(memproxy.pid)

    for tool_call in (False, True):
        agent = f"big-{stream}-{tool_call}"
        fake_upstream.push(Fault.huge(HUGE, tool_call=tool_call))
        status, error, chunks, _ = send(memproxy, agent, stream)
        assert error is not None, status
        validate_error(error)
        assert error["error"]["code"] == "upstream_response_too_large"
        assert status == (200 if chunks else 502)  # an event only once the stream started
        stored = storage.transcript(database_url, agent, visible_only=False,
                                    include_superseded=True)
        assert [m.role for m in stored] == ["user"]  # the input kept, nothing half-stored
        assert storage.last_turn(database_url, agent).status == "failed"

        status, error, _, text = send(memproxy, agent, stream, retry=True)  # the next one works
        assert status == 200 and error is None and text
        assert [m.role for m in storage.transcript(database_url, agent)] == ["user", "assistant"]

    growth = peak_rss_kb(memproxy.pid) - before
    assert growth < MAX_GROWTH_KB, f"peak RSS grew {growth} KB over two 30 MB answers"
