"""Retries and resends replay a turn only at its own position (issue #15, symptoms 6 and 7).

- A marked retry (`x-stainless-retry-count: N>0`, as openai-python sends after a 429) replays
  a stored answer only for the conversation's last turn with the same request, never an older
  turn that happens to have the same text: asking "What is my name?" again after telling it
  must not bring back the first "I don't know".
- An unmarked byte-identical resend from an SDK-style client (the application's own retry
  after its HTTP timeout fired, while the turn went on to finish on the server) within
  `[agent] resend_window_s` of that turn's end is a replay, not a second turn: the message and
  its memory edit are stored once. After the window it is a new turn.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.fakes import Fault, Reply, message_text, scripted_model
from tests.prompt_check import ClientLog, check_exchange, normal
from tests.servers import UpstreamGate

MODEL = "gpt-4o-mini"


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def rest_messages(proxy, agent: str) -> list[tuple[str, str]]:
    """The visible, current messages of the agent's default conversation, through the agents
    REST API: (role, content)."""
    with proxy.http() as http:
        page = http.get(f"/v1/agents/{agent}/conversations/default/messages",
                        params={"limit": 1000})
    assert page.status_code == 200, page.text
    return [(m["role"], m["content"] or "") for m in page.json()["data"]
            if m["visible"] and not m["superseded"]]


def rest_block(proxy, agent: str, label: str = "human") -> tuple[str, list[dict]]:
    """A block's value and its revisions (newest first), through the agents REST API."""
    with proxy.http() as http:
        block = http.get(f"/v1/agents/{agent}/blocks/{label}")
        history = http.get(f"/v1/agents/{agent}/blocks/{label}/history")
    assert block.status_code == 200 and history.status_code == 200, (block.text, history.text)
    return block.json()["value"], history.json()["data"]


# --- symptom 6: a marked retry must not replay an older identical turn --------------------------

def tell_kim(client) -> list[tuple]:
    """Turns 1 and 2: "What is my name?" (not known yet), "My name is Kim"; returns the path."""
    path: list[tuple] = []
    for text, answer in (("What is my name?", "I don't know your name."),
                         ("My name is Kim", "Got it, I'll remember that.")):
        reply = client.chat.completions.create(model=MODEL, messages=[u(text)])
        assert reply.choices[0].message.content == answer
        path += [normal(u(text)), normal({"role": "assistant", "content": answer})]
    return path


def check_fresh_answer(proxy, agent: str, log: ClientLog, before: int, raw, path) -> None:
    """The SDK's attempts at turn 3: 429s, then a marked retry answered by the model, which
    knows the name now; the transcript holds the question twice, answered each time."""
    attempts = log.exchanges[before:]
    statuses = [e.status for e in attempts]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {429}, statuses
    assert [e.sent_headers.get("x-stainless-retry-count") for e in attempts] == [
        str(n) for n in range(len(attempts))]
    assert raw.headers.get("x-memproxy-replayed") is None, (
        f"an older turn was replayed: {raw.parse().choices[0].message.content!r}")
    assert raw.parse().choices[0].message.content == "Your name is Kim."
    check_exchange(attempts[-1], path)
    assert rest_messages(proxy, agent) == [
        ("user", "What is my name?"), ("assistant", "I don't know your name."),
        ("user", "My name is Kim"), ("assistant", "Got it, I'll remember that."),
        ("user", "What is my name?"), ("assistant", "Your name is Kim."),
    ]


def test_a_question_retried_after_an_upstream_429_gets_a_fresh_answer(make_proxy, fake_upstream):
    """openai-python (max_retries=2) asks "What is my name?", says "My name is Kim", asks
    again; the upstream answers that third call with a 429 first: memproxy passes it on (its
    own retries off), the SDK retries with `x-stainless-retry-count: 1`, and the answer must
    come from the model now, not turn 1's stored "I don't know"."""
    proxy = make_proxy({"upstream": {"max_retries": 0}})
    log = ClientLog(fake_upstream)
    client = proxy.client(max_retries=2, http_client=log.sync_client(timeout=30),
                          default_headers={"X-Agent-Id": "kim"})
    path = tell_kim(client)
    fake_upstream.push(Fault.rate_limited(retry_after=0.2))
    before = len(log.exchanges)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[u("What is my name?")])
    check_fresh_answer(proxy, "kim", log, before, raw, path)


def test_a_question_retried_after_memproxys_own_429_gets_a_fresh_answer(
        make_proxy, fake_upstream, _upstream_server):
    """The same, with the 429 from memproxy itself (`[limits] concurrent_turns = 1` while
    another agent's turn of the same tenant is running): refused before anything is stored,
    so turn 3 is not in the store when the marked retry comes, and the only stored turn with
    the same request is turn 1, which is not the conversation's last turn."""
    proxy = make_proxy({"limits": {"concurrent_turns": 1}})
    log = ClientLog(fake_upstream)
    client = proxy.client(max_retries=2, http_client=log.sync_client(timeout=30),
                          default_headers={"X-Agent-Id": "kim"})
    path = tell_kim(client)
    gate = UpstreamGate(fake_upstream.app)  # holds the upstream's answers until released
    _upstream_server[1].target = gate
    busy = threading.Thread(target=lambda: proxy.client().chat.completions.create(
        model=MODEL, messages=[u("a long job")], extra_headers={"X-Agent-Id": "other"}))
    busy.start()
    try:
        assert gate.held.wait(30), "the other agent's turn never reached the upstream"
        # the SDK's first attempt is refused; let the other turn finish before its retry
        log.on_status[429] = gate.release
        before = len(log.exchanges)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[u("What is my name?")])
    finally:
        gate.release()
        busy.join(30)
    check_fresh_answer(proxy, "kim", log, before, raw, path)


def test_a_marked_retry_of_the_last_turn_is_still_replayed(make_proxy, fake_upstream):
    """The other side of the rule: the same request marked as a retry right after the last
    turn finished gets that turn's stored answer, with no upstream call and nothing stored."""
    proxy = make_proxy()
    client = proxy.client(default_headers={"X-Agent-Id": "last"})
    first = client.chat.completions.create(model=MODEL, messages=[u("What is my name?")])
    client.chat.completions.create(model=MODEL, messages=[u("My name is Kim")])
    third = client.chat.completions.create(model=MODEL, messages=[u("What is my name?")])
    assert (first.choices[0].message.content, third.choices[0].message.content) == (
        "I don't know your name.", "Your name is Kim.")
    calls = len(fake_upstream.requests)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[u("What is my name?")],
        extra_headers={"x-stainless-retry-count": "1"})
    assert raw.headers.get("x-memproxy-replayed") == "true"
    assert raw.parse().choices[0].message.content == "Your name is Kim."
    assert raw.parse().id == third.id
    assert len(fake_upstream.requests) == calls
    assert [r for r, _ in rest_messages(proxy, "last")] == ["user", "assistant"] * 3


# --- symptom 7: an unmarked resend after the client's own timeout -------------------------------

FACT_REQUEST = "Please note DUPFACT42 for later"
FACT_ANSWER = "Noted: DUPFACT42."


GREETING = ("Hello there", "Echo: Hello there (saw 1 user messages)")


def fact_model(body: dict) -> Reply:
    """A model that stores the fact whenever it is asked to, then confirms it (and answers
    anything else as the scripted model does)."""
    last = body["messages"][-1]
    if last.get("role") == "tool":
        return Reply(content=FACT_ANSWER)
    if message_text(last) != FACT_REQUEST:
        return scripted_model(body)
    return Reply(tool_calls=[("core_memory_append", {"label": "human", "content": "DUPFACT42"})])


def time_out_while_the_turn_runs(proxy, fake_upstream, agent: str, earlier_turns: int
                                 ) -> tuple[list[dict], list[tuple[str, str]]]:
    """After `earlier_turns` plain turns (0: the fact is the conversation's first message),
    send the turn with an HTTP timeout shorter than the (delayed) upstream: the client gives
    up, the turn goes on and stores a memory edit and its answer. Returns the messages sent
    and the transcript (role, text) the server then holds."""
    fake_upstream.responder = fact_model
    client = proxy.client(max_retries=0, default_headers={"X-Agent-Id": agent})
    stored: list[tuple[str, str]] = []
    for _ in range(earlier_turns):
        client.chat.completions.create(model=MODEL, messages=[u(GREETING[0])])
        stored += [("user", GREETING[0]), ("assistant", GREETING[1])]
    calls = len(fake_upstream.requests)
    fake_upstream.push(Fault.delay(1.5))  # then the responder's answer
    messages = [u(FACT_REQUEST)]
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(model=MODEL, messages=messages)
    stored += [("user", FACT_REQUEST), ("assistant", FACT_ANSWER)]
    deadline = time.monotonic() + 30
    while rest_messages(proxy, agent) != stored:
        assert time.monotonic() < deadline, (
            f"the turn never finished on the server: {rest_messages(proxy, agent)!r}")
        time.sleep(0.05)
    assert len(fake_upstream.requests) == calls + 2  # the memory edit, then the answer
    return messages, stored


def resend(proxy, agent: str, messages: list[dict]) -> httpx.Response:
    """The application sends the same request again, as a new call (no retry marker)."""
    client = proxy.client(max_retries=0, default_headers={"X-Agent-Id": agent})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert raw.http_request.headers.get("x-stainless-retry-count") == "0"
    return raw


# 0: the resent message is also the conversation's first (its root); 1: it follows a turn
EARLIER_TURNS = pytest.mark.parametrize("earlier_turns", [0, 1], ids=["first", "later"])


@EARLIER_TURNS
def test_an_unmarked_resend_within_the_window_is_a_replay_stored_once(
        make_proxy, fake_upstream, earlier_turns):
    proxy = make_proxy()  # [agent] resend_window_s: the default (60 s)
    messages, stored = time_out_while_the_turn_runs(proxy, fake_upstream, "dup", earlier_turns)
    calls = len(fake_upstream.requests)
    raw = resend(proxy, "dup", messages)
    value, revisions = rest_block(proxy, "dup")
    assert value.count("DUPFACT42") == 1, f"the memory edit was stored again: {value!r}"
    assert [r["source"] for r in revisions] == ["tool:core_memory_append"]
    assert rest_messages(proxy, "dup") == stored
    assert len(fake_upstream.requests) == calls, "the resend reached the upstream"
    assert raw.headers.get("x-memproxy-replayed") == "true"
    assert raw.parse().choices[0].message.content == FACT_ANSWER


@EARLIER_TURNS
def test_an_unmarked_resend_after_the_window_is_a_new_turn(
        make_proxy, fake_upstream, earlier_turns):
    window = 0.3
    proxy = make_proxy({"agent": {"resend_window_s": window}})
    messages, stored = time_out_while_the_turn_runs(proxy, fake_upstream, "late", earlier_turns)
    calls = len(fake_upstream.requests)
    time.sleep(window * 3)
    raw = resend(proxy, "late", messages)
    assert raw.headers.get("x-memproxy-replayed") is None
    assert raw.parse().choices[0].message.content == FACT_ANSWER
    assert len(fake_upstream.requests) == calls + 2  # asked again, it stores the fact again
    assert rest_messages(proxy, "late") == stored + [("user", FACT_REQUEST),
                                                     ("assistant", FACT_ANSWER)]
    value, revisions = rest_block(proxy, "late")
    assert value.count("DUPFACT42") == 2, value
    assert len(revisions) == 2
