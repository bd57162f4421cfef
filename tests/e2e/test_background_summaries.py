"""Background summaries through a real server, on SQLite and Postgres (docs/paging.md): the
turn that pages out answers without waiting for the summarizer, the next prompts show the gap
note and then the summary, a failing summarizer wipes nothing, and a summary interrupted by
kill -9 (or stopped by a shutdown) is written by the restarted process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from proxy.core.summary import PENDING_REASON, SUMMARY_SYSTEM_PROMPT
from tests import storage
from tests.fakes import FakeUpstream, Fault, Reply, scripted_model
from tests.fakes.scripted_model import message_text
from tests.fakes.upstream import prompt_tokens
from tests.servers import ProcessHandle, memproxy_processes

MODEL = "paging-test-model"  # not in the built-in table: [memory] default_context_window
WINDOW = 2048
AGENT = "bg"
HEADERS = {"X-Agent-Id": AGENT}
SUMMARY = "Summary: the user keeps locker code 4711."


def is_summary(body: dict) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and message_text(messages[0]) == SUMMARY_SYSTEM_PROMPT


def summarizer(hold: threading.Event | None = None, fail: bool = False
               ) -> Callable[[dict], Reply | Fault]:
    """The scripted model; summary requests answer SUMMARY, fail with a 500, or wait while
    `hold` is set."""
    def respond(body: dict) -> Reply | Fault:
        if not is_summary(body):
            return scripted_model(body)
        if fail:
            return Fault.server_error()
        if hold is not None and hold.is_set():
            return Fault.delay(60, then=Reply(SUMMARY))
        return Reply(SUMMARY)
    return respond


def say(http: httpx.Client, text: str) -> httpx.Response:
    response = http.post("/chat/completions", headers=HEADERS, json={
        "model": MODEL, "max_tokens": 128, "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response


def filler(i: int) -> str:
    return (f"Turn {i}: tell me about topic {i} and why it matters for the plan we are making"
            " together this week, in some detail please.")


def summary_requests(fake: FakeUpstream) -> list:
    return [r for r in fake.requests if r.json and is_summary(r.json)]


def wait_for(check: Callable[[], object], timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


@pytest.fixture
def proxy(make_proxy, fake_upstream):
    fake_upstream.context_window = WINDOW
    return make_proxy({"memory": {"default_context_window": WINDOW, "summary_poll_s": 0.2,
                                  "summary_retry_max_s": 0.2, "summarizer_timeout_s": 2},
                       "upstream": {"max_retries": 0}})


def test_the_summary_is_written_after_the_turn_and_shown_from_the_next_one(
        proxy, fake_upstream, database_url):
    hold = threading.Event()
    hold.set()
    fake_upstream.responder = summarizer(hold)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        say(http, "My locker code is 4711, please keep it in mind.")
        i = 1
        while not summary_requests(fake_upstream):
            say(http, filler(i))  # answered while its summary (if any) is still held
            i += 1
            assert i < 60, "never paged out"
        summary, job = storage.summary_state(database_url, AGENT)
        assert job is not None and PENDING_REASON in summary
        say(http, filler(i))
        turn_prompt = [r for r in fake_upstream.requests if not is_summary(r.json)][-1].json
        assert PENDING_REASON in str(turn_prompt["messages"])  # the gap note, meanwhile
        found = say(http, "Search history: locker code").json()["choices"][0]["message"]
        assert "4711" in found["content"]  # paged out, still searchable
        hold.clear()
        fake_upstream.clear()
        wait_for(lambda: storage.summary_state(database_url, AGENT) == (SUMMARY, None))
        say(http, filler(i + 1))
        # the turn's request: a summarizer call retried after a timeout may land after it
        last = [r for r in fake_upstream.requests if not is_summary(r.json)][-1].json
        # the summary replaced the gap note the job was for (this turn may page out again and
        # add a note of its own: the scripted summarizer answers at once)
        assert SUMMARY in str(last["messages"]) and summary not in str(last["messages"])
        for r in fake_upstream.requests:
            assert prompt_tokens(r.json) + 128 <= WINDOW


def test_a_failing_summarizer_keeps_the_gap_note_and_the_messages_searchable(
        proxy, fake_upstream, database_url):
    fake_upstream.responder = summarizer(fail=True)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        say(http, "My locker code is 4711, please keep it in mind.")
        i = 1
        while not storage.summary_state(database_url, AGENT)[1]:
            say(http, filler(i))
            i += 1
            assert i < 60, "never paged out"
        job = wait_for(lambda: (j := storage.summary_state(database_url, AGENT)[1])
                       and j.attempts >= 2 and j)  # retried with backoff
        assert "500" in (job.last_error or "") or "Error" in (job.last_error or "")
        summary, _ = storage.summary_state(database_url, AGENT)
        assert PENDING_REASON in summary and "conversation_search" in summary
        found = say(http, "Search history: locker code").json()["choices"][0]["message"]
        assert "4711" in found["content"]
        fake_upstream.responder = summarizer()  # the summarizer is back: the retry writes it
        wait_for(lambda: storage.summary_state(database_url, AGENT) == (SUMMARY, None))


# --- kill -9 mid-summary ---------------------------------------------------------------------

ENV = {"MEMPROXY_AGENT_LEASE_TTL_S": "1", "MEMPROXY_UPSTREAM_MAX_RETRIES": "0",
       "MEMPROXY_MEMORY_DEFAULT_CONTEXT_WINDOW": str(WINDOW),
       "MEMPROXY_MEMORY_SUMMARY_LEASE_S": "1", "MEMPROXY_MEMORY_SUMMARY_POLL_S": "0.2"}


@pytest.fixture
def memproxy(database_url: str, fake_upstream: FakeUpstream
             ) -> Iterator[Callable[[], ProcessHandle]]:
    with memproxy_processes(database_url, fake_upstream.url, ENV) as start:
        yield start


def start_a_held_summary(start: Callable[[], ProcessHandle], fake: FakeUpstream,
                         hold: threading.Event) -> ProcessHandle:
    """A server whose chat has paged out and whose summarizer call is being held."""
    hold.set()
    fake.context_window = WINDOW
    fake.responder = summarizer(hold)
    server = start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        say(http, "My locker code is 4711, please keep it in mind.")
        i = 1
        while not summary_requests(fake):
            say(http, filler(i))
            i += 1
            assert i < 60, "never paged out"
    return server


def test_a_shutdown_mid_summary_hands_the_job_back_due_at_once(
        memproxy, fake_upstream, database_url):
    hold = threading.Event()
    server = start_a_held_summary(memproxy, fake_upstream, hold)
    assert storage.summary_state(database_url, AGENT)[1].owner  # claimed, running
    # SIGTERM while the summary is held upstream: a graceful exit (uvicorn re-raises SIGTERM
    # after it; not the SIGKILL `stop` sends after 10 s), the job handed back
    assert server.stop() in (0, -signal.SIGTERM)
    summary, job = storage.summary_state(database_url, AGENT)
    assert job is not None and job.owner == "" and job.attempts == 0
    assert PENDING_REASON in summary
    hold.clear()
    memproxy()
    wait_for(lambda: storage.summary_state(database_url, AGENT) == (SUMMARY, None))


def test_a_summary_interrupted_by_kill_9_is_written_after_the_restart(
        memproxy, fake_upstream, database_url):
    hold = threading.Event()
    server = start_a_held_summary(memproxy, fake_upstream, hold)
    summary, job = storage.summary_state(database_url, AGENT)
    assert job is not None and job.owner and PENDING_REASON in summary  # claimed, running
    server.kill()  # SIGKILL while the summarizer call is held
    summary, job = storage.summary_state(database_url, AGENT)
    assert job is not None and PENDING_REASON in summary  # nothing lost, nothing written

    hold.clear()
    memproxy()  # the restarted process claims the job once its lease ran out
    wait_for(lambda: storage.summary_state(database_url, AGENT) == (SUMMARY, None))
    rows = storage.transcript(database_url, AGENT)
    assert rows[0].data["content"].startswith("My locker code is 4711")
    assert not rows[0].in_context


def test_another_process_writes_a_summary_whose_process_died(
        memproxy, fake_upstream, database_url):
    hold = threading.Event()
    first = start_a_held_summary(memproxy, fake_upstream, hold)
    second = memproxy()  # the same database, running all along
    job = storage.summary_state(database_url, AGENT)[1]
    owner_pid = int(job.owner.split(":")[1])
    running, other = (first, second) if owner_pid == first.pid else (second, first)
    assert owner_pid == running.pid
    running.kill()
    hold.clear()
    wait_for(lambda: storage.summary_state(database_url, AGENT) == (SUMMARY, None))
    assert other.alive()  # written by the process that was running all along
