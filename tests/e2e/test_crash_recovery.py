"""After kill -9 (issue #8.2, #8.3): an interrupted turn is visible, reported and retryable.

Each test kills a memproxy process while the fake upstream holds its turn, restarts memproxy
on the same database (SQLite and Postgres) and looks at what a client and an operator see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests import storage
from tests.fakes import FakeUpstream, Fault
from tests.servers import ProcessHandle, memproxy_processes

MODEL = "gpt-4o-mini"
ENV = {"MEMPROXY_AGENT_LEASE_TTL_S": "1", "MEMPROXY_UPSTREAM_MAX_RETRIES": "0"}


@pytest.fixture
def memproxy(database_url: str, fake_upstream: FakeUpstream
             ) -> Iterator[Callable[[], ProcessHandle]]:
    """Start memproxy processes on the test's database; all are stopped at teardown."""
    with memproxy_processes(database_url, fake_upstream.url, ENV) as start:
        yield start


def post(server: ProcessHandle, messages: list[dict], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", headers=headers, timeout=30,
                      json={"model": MODEL, "messages": messages})


def kill_during_upstream_call(server: ProcessHandle, fake: FakeUpstream,
                              messages: list[dict], headers: dict[str, str]) -> None:
    """Send the request, and SIGKILL the server while the upstream is answering it."""
    calls = len(fake.requests)
    fake.push(Fault.delay(30))
    thread = threading.Thread(target=_quietly, args=(lambda: post(server, messages, headers),))
    thread.start()
    deadline = time.monotonic() + 15
    while len(fake.requests) == calls:
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.01)
    server.kill()
    thread.join()
    fake.clear()


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass  # the server died under this request: that is the point


def test_an_interrupted_turn_is_listed_unanswered_reported_and_continued(
        memproxy, database_url, fake_upstream):
    headers = {"X-Agent-Id": "crashvis", "X-Conversation-Id": "c1"}
    question = [{"role": "user", "content": "answered after a crash?"}]
    kill_during_upstream_call(memproxy(), fake_upstream, question, headers)

    server = memproxy()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        listed = http.get("/v1/agents/crashvis/conversations/c1/messages").json()["data"]
        assert [(m["role"], m["content"], m["visible"], m["superseded"]) for m in listed] == \
            [("user", "answered after a crash?", True, False)]
        assert storage.last_turn(database_url, "crashvis", "c1").status == "open"

        reply = post(server, question, {**headers, "x-stainless-retry-count": "1"})
        assert reply.status_code == 200, reply.text
        answer = reply.json()["choices"][0]["message"]["content"]
        assert answer == "Echo: answered after a crash? (saw 1 user messages)"
        listed = http.get("/v1/agents/crashvis/conversations/c1/messages").json()["data"]
        assert [(m["role"], m["content"]) for m in listed] == \
            [("user", "answered after a crash?"), ("assistant", answer)]
        assert listed[0]["turn_id"] == listed[1]["turn_id"]  # continued, not a new turn
    server.stop()
    assert "interrupted" in server.output()  # the restarted process said so
    assert "answered after a crash?" not in server.output()  # without the message text
    assert storage.last_turn(database_url, "crashvis", "c1").status == "done"


def test_a_regenerate_cut_by_a_crash_and_sent_again_is_answered_once(
        memproxy, database_url, fake_upstream):
    """A chat UI's first message is answered, but the answer never reaches it; it sends the
    message again (a regenerate), memproxy dies during that, and it sends it once more."""
    headers = {"X-Agent-Id": "crashregen", "X-OpenWebUI-Chat-Id": "c1"}  # a chat UI
    first = [{"role": "user", "content": "hello there"}]
    server = memproxy()
    assert post(server, first, headers).status_code == 200  # the client never saw this answer
    kill_during_upstream_call(server, fake_upstream, first, headers)  # its resend: regenerate

    server = memproxy()
    reply = post(server, first, headers)  # and again, as the user presses "retry"
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["message"]["content"]
    assert storage.roles_and_texts(storage.transcript(database_url, "crashregen", "c1")) == \
        [("user", "hello there"), ("assistant", answer)]


def test_a_regenerate_whose_upstream_call_failed_is_continued_by_the_resend(
        make_proxy, fake_upstream):
    """The same sequence without a crash: the regenerate's upstream call fails (a 5xx keeps
    the turn for a retry), and the resend continues that turn instead of storing the message
    a second time."""
    proxy = make_proxy({"upstream": {"max_retries": 0}})
    headers = {"X-Agent-Id": "regenfail", "X-OpenWebUI-Chat-Id": "c1"}  # a chat UI
    first = [{"role": "user", "content": "hello again"}]
    url = f"{proxy.base_url}/chat/completions"
    body = {"model": MODEL, "messages": first}
    assert httpx.post(url, headers=headers, json=body, timeout=30).status_code == 200
    fake_upstream.push(Fault.server_error(503))
    failed = httpx.post(url, headers=headers, json=body, timeout=30)  # a regenerate that fails
    assert failed.status_code == 503
    reply = httpx.post(url, headers=headers, json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["message"]["content"]
    assert answer == "Echo: hello again (saw 1 user messages)"
    assert storage.roles_and_texts(storage.transcript(proxy.settings.database.url, "regenfail",
                                                      "c1")) == \
        [("user", "hello again"), ("assistant", answer)]
