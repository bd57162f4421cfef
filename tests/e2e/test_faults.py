"""The fault matrix (docs/resilience.md): every upstream and model-output fault, streamed and
not, on both backends, through the real server and the official SDK (its retries off).

For each fault the client gets an answer or the right OpenAI error; every completion, chunk
and error validates against the OpenAI description; the store is consistent (the input once,
nothing half-written, nothing twice); and sending the same request again (as an SDK retry)
succeeds and is stored once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from proxy.config import merge
from proxy.core.loop import STEPS_EXHAUSTED
from tests import storage
from tests.fakes import FakeUpstream, Fault, Reply
from tests.openapi_check import validate_chat_chunk, validate_chat_completion, validate_error
from tests.servers import AppSwitch, ServerThread, refusing_port, scripted_upstream

MODEL = "gpt-4o-mini"
AGENT_ID = "faulty"
TEXT = "hello there"
ECHO = f"Echo: {TEXT} (saw 1 user messages)"
# Short timeouts keep the matrix fast; each case changes what it exercises.
FAST = {"upstream": {"max_retries": 1, "connect_timeout_s": 2.0, "read_timeout_s": 5.0,
                     "first_token_timeout_s": 5.0, "request_deadline_s": 20.0}}


@pytest.fixture(scope="module")
def _backup_server() -> Iterator[tuple[ServerThread, AppSwitch]]:
    switch = AppSwitch()
    with ServerThread(switch) as server:
        yield server, switch


@pytest.fixture
def backup_upstream(_backup_server: tuple[ServerThread, AppSwitch]) -> Iterator[FakeUpstream]:
    """A second scripted upstream, to be a fallback."""
    with scripted_upstream(*_backup_server) as fake:
        yield fake


@dataclass
class Env:
    fake: FakeUpstream
    backup: FakeUpstream
    stack: contextlib.ExitStack
    proxy: Any = None
    port: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    status: int
    headers: httpx.Headers
    completion: dict | None = None  # non-stream success
    chunks: list[dict] = field(default_factory=list)  # stream: the chunks before any error
    error: dict | None = None  # the error body (response or, after the stream began, event)
    done: bool = False  # the stream ended with [DONE]

    @property
    def text(self) -> str:
        if self.completion is not None:
            return self.completion["choices"][0]["message"]["content"] or ""
        return "".join((c["choices"][0]["delta"].get("content") or "")
                       for c in self.chunks if c["choices"])


def send(env: Env, stream: bool, *, agent: str = AGENT_ID, retry: bool = False) -> Outcome:
    """The request, through the official SDK; the raw result, validated."""
    headers = {"x-agent-id": agent}
    if retry:
        headers["x-stainless-retry-count"] = "1"
    client = env.proxy.client()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}],
                              "extra_headers": headers}
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(**kwargs)
            completion = raw.http_response.json()
            validate_chat_completion(completion)
            raw.parse()  # the SDK reads it as well
            return Outcome(raw.status_code, raw.headers, completion=completion)
        with client.chat.completions.with_streaming_response.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        ) as response:
            outcome = Outcome(response.status_code, response.headers)
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                assert not outcome.done, "nothing may follow [DONE]"
                if data == "[DONE]":
                    outcome.done = True
                    continue
                event = json.loads(data)
                assert outcome.error is None, "nothing but [DONE] may follow an error event"
                if "error" in event:
                    validate_error(event)
                    outcome.error = event
                else:
                    validate_chat_chunk(event)
                    outcome.chunks.append(event)
            assert outcome.done, "a stream always ends with [DONE]"
            return outcome
    except openai.APIStatusError as exc:
        body = exc.response.json()
        validate_error(body)
        return Outcome(exc.status_code, exc.response.headers, error=body)


@dataclass
class Case:
    name: str
    setup: Callable[[Env], None] = lambda env: None
    config: Callable[[Env], dict] = lambda env: {}
    status: int = 200  # the HTTP status the client sees (200 for errors after a stream began)
    code: str | None = None  # the error's code, if the outcome is an error
    started_error: bool = False  # a streamed request gets its error as an event after chunks
    plain: tuple[int, str | None] | None = None  # the non-stream outcome, when it differs
    stream_only: tuple[int, str | None] | None = None  # the streamed outcome, when it differs
    check: Callable[[Env, Outcome, bool], Any] = lambda env, outcome, stream: None
    before_retry: Callable[[Env], None] = lambda env: None


def upstream(**keys: Any) -> dict:
    return {"upstream": keys}


def push(*items: Reply | Fault) -> Callable[[Env], None]:
    return lambda env: env.fake.push(*items)


def refused_then_listening() -> tuple[Callable[[Env], dict], Callable[[Env], None]]:
    """The upstream's port refuses connections until `before_retry` starts a server on it."""

    def config(env: Env) -> dict:
        port_cm = refusing_port()
        env.port = port_cm.__enter__()
        env.notes["port"] = port_cm
        env.stack.callback(port_cm.__exit__, None, None, None)  # a no-op once `listen` ran
        return upstream(base_url=f"http://127.0.0.1:{env.port}/v1")

    def listen(env: Env) -> None:
        env.notes["port"].__exit__(None, None, None)
        server = ServerThread(env.fake.app, port=env.port).start()
        env.stack.callback(server.stop)

    return config, listen


def fallback_to_backup(**extra: Any) -> Callable[[Env], dict]:
    def config(env: Env) -> dict:
        port_cm = refusing_port()
        env.port = env.stack.enter_context(port_cm)
        return upstream(base_url=f"http://127.0.0.1:{env.port}/v1",
                        fallbacks=[{"base_url": env.backup.url, **extra}])

    return config


def warm_up(count: int) -> Callable[[Env], None]:
    """Failing requests from another agent, to open the primary's circuit."""

    def setup(env: Env) -> None:
        env.fake.push(*[Fault.server_error(500)] * count)
        for _ in range(count):
            send(env, False, agent="warm-up")
        env.notes["primary_calls"] = len(env.fake.requests)
        env.notes["backup_calls"] = len(env.backup.requests)

    return setup


def answered_by_backup(env: Env, outcome: Outcome, stream: bool) -> None:
    assert outcome.headers["x-memproxy-upstream"] == "1"
    assert env.backup.requests and env.backup.last.json["model"] == "gpt-4o"  # renamed


def primary_untouched(env: Env, outcome: Outcome, stream: bool) -> None:
    assert len(env.fake.requests) == env.notes["primary_calls"], "called while open"


def failed_fast(env: Env, outcome: Outcome, stream: bool) -> None:
    primary_untouched(env, outcome, stream)
    assert 1 <= int(outcome.headers["retry-after"]) <= 2  # when the trial will be let through


def skipped_to_backup(env: Env, outcome: Outcome, stream: bool) -> None:
    primary_untouched(env, outcome, stream)
    assert len(env.backup.requests) == env.notes["backup_calls"] + 1
    assert outcome.headers["x-memproxy-upstream"] == "1"


def retry_after(value: str) -> Callable[[Env, Outcome, bool], None]:
    def check(env: Env, outcome: Outcome, stream: bool) -> None:
        assert outcome.headers["retry-after"] == value

    return check


def calls(n: int) -> Callable[[Env, Outcome, bool], None]:
    def check(env: Env, outcome: Outcome, stream: bool) -> None:
        assert len(env.fake.requests) == n

    return check


def tool_error_reply(env: Env, outcome: Outcome, stream: bool) -> None:
    """The made-up call went back to the model; the client saw only the text that followed."""
    assert outcome.text.startswith("Tool result: Error: there is no tool named 'launch_rockets'")
    if outcome.completion is not None:
        choice = outcome.completion["choices"][0]
        assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    else:
        choices = [c["choices"][0] for c in outcome.chunks if c["choices"]]
        assert not any(c["delta"].get("tool_calls") for c in choices)
        assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["stop"]


_refused = refused_then_listening()

CASES = [
    Case("429-retried", push(Fault.rate_limited(0.01)), check=calls(2)),
    Case("429-exhausted", push(Fault.rate_limited(0.01), Fault.rate_limited(0.01)),
         status=429, code="rate_limit_exceeded", check=retry_after("0.01")),
    Case("500", push(Fault.server_error(500), Fault.server_error(500)), status=500),
    Case("502", push(Fault.server_error(502), Fault.server_error(502)), status=502),
    Case("503", push(Fault.server_error(503), Fault.server_error(503)), status=503),
    Case("503-retried", push(Fault.server_error(503)), check=calls(2)),
    Case("refused", config=_refused[0], before_retry=_refused[1], status=502,
         code="upstream_unreachable"),
    Case("read-timeout", push(Fault.delay(3.0)), config=lambda env: upstream(read_timeout_s=0.5),
         status=504, code="upstream_timeout"),
    Case("first-token-timeout", push(Fault.stall(10.0)),
         config=lambda env: upstream(first_token_timeout_s=0.5, request_deadline_s=3.0),
         status=504, code="first_token_timeout",
         plain=(504, "deadline_exceeded")),  # no tokens without a stream: the deadline ends it
    Case("deadline", push(Fault.delay(10.0)), config=lambda env: upstream(request_deadline_s=1.0),
         status=504, code="deadline_exceeded"),
    Case("deadline-mid-turn",
         push(Reply(content="Let me look.", tool_calls=[("archival_memory_search", {"query": "x"})]),
              Fault.delay(10.0)),
         config=lambda env: upstream(request_deadline_s=2.5),  # room for the first step
         code="deadline_exceeded", started_error=True, plain=(504, "deadline_exceeded")),
    Case("stream-cut", push(Fault.truncate_stream(after_chunks=3)),
         code="stream_interrupted", started_error=True, plain=(502, "upstream_disconnected")),
    Case("invalid-json", push(Fault.invalid_json()), status=502, code="bad_upstream_response"),
    Case("invalid-tool-arguments", push(Reply(tool_calls=[("core_memory_append", "{broken")])),
         check=lambda env, o, s: o.text.startswith("I could not update my memory: Error:")),
    Case("unknown-tool", push(Reply(tool_calls=[("launch_rockets", {"count": 1})])),
         check=tool_error_reply),
    Case("tool-loop", push(*[Reply(tool_calls=[("archival_memory_search", {"query": "x"})])] * 3),
         config=lambda env: {"agent": {"max_steps": 3}},
         check=lambda env, o, s: o.text == STEPS_EXHAUSTED and len(env.fake.requests) == 3),
    Case("empty-once", push(Reply(content="")), check=calls(2)),
    Case("empty-twice", push(Reply(content=""), Fault.no_choices()), status=502,
         code="empty_response"),
    Case("fallback", config=fallback_to_backup(models=["gpt-4o*"], model="gpt-4o"),
         check=answered_by_backup),
    Case("circuit-open", warm_up(2),
         config=lambda env: upstream(max_retries=0, circuit_failures=2, circuit_reset_s=2.0),
         status=503, code="circuit_open", check=failed_fast,
         before_retry=lambda env: time.sleep(2.1)),  # wait for the half-open trial
    Case("circuit-open-fallback", warm_up(1),
         config=lambda env: upstream(max_retries=0, circuit_failures=1, fallbacks=[
             {"base_url": env.backup.url}]),
         check=skipped_to_backup),
]


def expected(case: Case, stream: bool) -> tuple[int, str | None, bool]:
    """(status, error code or None, error arrives after the stream began)."""
    if not stream and case.plain is not None:
        return case.plain[0], case.plain[1], False
    if stream and case.started_error:
        return 200, case.code, True
    return case.status, case.code, False


def everything(env: Env) -> list:
    return storage.transcript(env.proxy.settings.database.url, AGENT_ID, visible_only=False)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(make_proxy, fake_upstream, backup_upstream, case: Case, stream: bool) -> None:
    with contextlib.ExitStack() as stack:
        env = Env(fake_upstream, backup_upstream, stack)
        env.proxy = make_proxy(merge(FAST, case.config(env)))
        case.setup(env)
        status, code, started = expected(case, stream)

        outcome = send(env, stream)

        url = env.proxy.settings.database.url
        failed = status != 200 or started
        assert outcome.status == status, (outcome.status, outcome.error)
        if not failed:
            assert outcome.error is None and outcome.text
        else:
            assert outcome.error is not None and outcome.error["error"]["code"] == code
            assert "Traceback" not in json.dumps(outcome.error)
            assert bool(outcome.chunks) == started  # an error event only once chunks went out
        case.check(env, outcome, stream)
        stored = everything(env)
        assert [m.data["content"] for m in stored if m.role == "user"] == [TEXT]  # once
        if not failed:
            assert stored[-1].role == "assistant" and stored[-1].visible
            assert storage.last_turn(url, AGENT_ID).status == "done"
            assert storage.roles_and_texts(storage.transcript(url, AGENT_ID)) == [
                ("user", TEXT), ("assistant", outcome.text)]
        else:
            assert [m.role for m in stored] == ["user"]  # nothing half-written
            assert storage.last_turn(url, AGENT_ID).status == "failed"

        env.fake.clear()
        case.before_retry(env)
        again = send(env, stream, retry=True)

        assert again.status == 200 and again.error is None
        if not failed:
            assert again.text == outcome.text  # the finished turn is replayed
            assert again.headers.get("x-memproxy-replayed") == "true"
        else:
            assert again.text == ECHO
        visible = storage.roles_and_texts(storage.transcript(url, AGENT_ID))
        assert visible == [("user", TEXT), ("assistant", again.text)]
        assert [m.role for m in everything(env)].count("user") == 1
        assert storage.last_turn(url, AGENT_ID).status == "done"


# -- pass-through and metrics -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_pass_through_falls_back_and_says_which_upstream_answered(
    make_proxy, fake_upstream, backup_upstream, stream
):
    with refusing_port() as port:
        proxy = make_proxy(upstream(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                                    fallbacks=[{"base_url": backup_upstream.url,
                                                "api_key": "sk-backup"}]))
        body = json.dumps({"model": MODEL, "stream": stream,
                           "messages": [{"role": "user", "content": "no memory"}]})
        response = httpx.post(f"{proxy.base_url}/chat/completions", content=body,
                              headers={"content-type": "application/json",
                                       "authorization": "Bearer sk-client"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["x-memproxy-upstream"] == "1"
    sent = backup_upstream.last
    assert sent.body == body.encode()  # byte for byte
    assert sent.headers["authorization"] == "Bearer sk-backup"  # never the client's key
    if stream:
        lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            validate_chat_chunk(json.loads(line.removeprefix("data: ")))
    else:
        validate_chat_completion(response.json())


def test_pass_through_fails_fast_while_the_circuit_is_open(make_proxy, fake_upstream):
    proxy = make_proxy(upstream(max_retries=0, circuit_failures=1, circuit_reset_s=60))
    fake_upstream.push(Fault.server_error(503))
    client = proxy.client()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "no memory"}]}
    with pytest.raises(openai.InternalServerError) as first:
        client.chat.completions.create(**body)
    assert first.value.status_code == 503  # the upstream's own answer, relayed
    calls_before = len(fake_upstream.requests)
    with pytest.raises(openai.InternalServerError) as second:
        client.chat.completions.create(**body)
    assert second.value.status_code == 503 and second.value.code == "circuit_open"
    validate_error(second.value.response.json())
    assert int(second.value.response.headers["retry-after"]) >= 1
    assert len(fake_upstream.requests) == calls_before


def test_a_client_provoked_500_in_pass_through_does_not_open_the_circuit(
    make_proxy, fake_upstream
):
    proxy = make_proxy(upstream(max_retries=0, circuit_failures=1, circuit_reset_s=60))
    fake_upstream.push(Fault.server_error(500))
    client = proxy.client()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "odd body"}]}
    with pytest.raises(openai.InternalServerError) as first:
        client.chat.completions.create(**body)
    assert first.value.status_code == 500  # relayed as the upstream gave it
    calls_before = len(fake_upstream.requests)
    answer = client.chat.completions.create(**body)  # the circuit stayed closed
    validate_chat_completion(answer.model_dump(exclude_unset=True))
    assert len(fake_upstream.requests) == calls_before + 1


def test_metrics_count_failures_fallbacks_and_circuit_state(
    make_proxy, fake_upstream, backup_upstream
):
    proxy = make_proxy(upstream(max_retries=0, circuit_failures=1, circuit_reset_s=60,
                                fallbacks=[{"base_url": backup_upstream.url}]))
    fake_upstream.push(Fault.server_error(500))
    client = proxy.client()
    for text in ("one", "two"):
        client.chat.completions.create(model=MODEL, extra_headers={"x-agent-id": "m"},
                                       messages=[{"role": "user", "content": text}])
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'memproxy_upstream_failures_total{kind="http_5xx",upstream="0"} 1.0' in metrics
    assert 'memproxy_upstream_failures_total{kind="circuit_open",upstream="0"} 1.0' in metrics
    assert 'memproxy_upstream_fallbacks_total{upstream="1"} 2.0' in metrics
    assert 'memproxy_upstream_circuit_state{upstream="0"} 2.0' in metrics
    assert 'memproxy_upstream_circuit_state{upstream="1"} 0.0' in metrics
