"""The fakes themselves, proven with the real openai SDK pointed straight at the fake upstream.

If these pass, a failing memproxy end-to-end test is about memproxy, not about the fakes.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette

from tests import openapi_check, secrets
from tests.fakes import FakeUpstream, Fault, Reply, prompt_tokens, scripted_model
from tests.servers import ServerThread, run_memproxy_subprocess


def tool(name: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": name,
            "strict": True,
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "required": list(params),
                "properties": {p: {"type": t} for p, t in params.items()},
            },
        },
    }


MEMORY_TOOLS = [
    tool("core_memory_append", label="string", content="string"),
    tool("core_memory_replace", label="string", old_content="string", new_content="string"),
    tool("archival_memory_insert", content="string"),
    tool("archival_memory_search", query="string"),
    tool("conversation_search", query="string"),
]


@pytest.fixture
def client(fake_upstream: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_upstream.url, api_key=secrets.CLIENT_KEY, max_retries=0,
                         timeout=10)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def raw_events(client: openai.OpenAI, **kw: Any) -> list[str]:
    """The `data:` payloads of a streamed completion, exactly as sent."""
    with client.chat.completions.with_streaming_response.create(stream=True, **kw) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]


# -- happy paths ---------------------------------------------------------------------------


def test_non_stream_completion_validates(client, fake_upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "be nice"}, *user("hello")]
    )
    body = raw.http_response.json()
    openapi_check.validate_chat_completion(body)
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-fake-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Echo: hello (saw 1 user messages)"
    assert completion.choices[0].finish_reason == "stop"
    assert body["choices"][0]["logprobs"] is None
    assert completion.usage.prompt_tokens == prompt_tokens(fake_upstream.last.json) > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_chunks_validate(client, include_usage):
    events = raw_events(
        client,
        model="gpt-4o",
        messages=user("one two three four"),
        stream_options={"include_usage": include_usage},
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        openapi_check.validate_chat_chunk(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert len([d for d in deltas if d]) >= 4
    assert "".join(deltas) == "Echo: one two three four (saw 1 user messages)"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert all("usage" not in c for c in chunks)


def test_stream_tool_call_reassembles(client):
    events = raw_events(
        client, model="gpt-4o", messages=user("My name is Ada Lovelace."), tools=MEMORY_TOOLS
    )
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        openapi_check.validate_chat_chunk(chunk)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    opener, fragments = calls[0], calls[1:]
    assert opener["id"].startswith("call_") and opener["type"] == "function"
    assert opener["function"] == {"name": "core_memory_append", "arguments": ""}
    assert len(fragments) > 1 and all(set(f) == {"index", "function"} for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(arguments) == {"label": "human", "content": "Name: Ada Lovelace"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_sdk_stream_helper_accumulates_tool_calls(client):
    with client.chat.completions.stream(
        model="gpt-4o",
        messages=user('Use tool get_weather with {"city": "Paris"}'),
        tools=[tool("get_weather", city="string")],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.parsed_arguments == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.completion_tokens > 0


def test_non_stream_tool_call(client):
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("Search archive: blue whales"), tools=MEMORY_TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "archival_memory_search"
    assert json.loads(call.function.arguments) == {"query": "blue whales"}


def test_tool_round_trip_through_sdk(client):
    first = client.chat.completions.create(
        model="gpt-4o", messages=user("Search history: pizza"), tools=MEMORY_TOOLS
    )
    message = first.choices[0].message
    second = client.chat.completions.create(
        model="gpt-4o",
        tools=MEMORY_TOOLS,
        messages=[
            *user("Search history: pizza"),
            message.model_dump(exclude_none=True),
            {
                "role": "tool",
                "tool_call_id": message.tool_calls[0].id,
                "content": "1. pizza on Friday",
            },
        ],
    )
    assert second.choices[0].message.content == "Search results: 1. pizza on Friday"


def test_models_and_embeddings_validate(client, fake_upstream):
    models = httpx.get(f"{fake_upstream.url}/models").json()
    openapi_check.validate_models(models)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    fake_upstream.models = [{"id": "local", "max_model_len": 4096}]
    assert httpx.get(f"{fake_upstream.url}/models").json()["data"][0]["max_model_len"] == 4096

    body = {"model": "text-embedding-3-small", "input": ["red apple", "red apple pie", "ocean"]}
    raw = httpx.post(f"{fake_upstream.url}/embeddings", json=body).json()
    openapi_check.validate_embeddings(raw)
    vecs = [d["embedding"] for d in raw["data"]]
    assert all(len(v) == 64 for v in vecs)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    # The SDK asks for base64 by default and decodes it: same vectors, float32 precision.
    sdk = client.embeddings.create(model="text-embedding-3-small", input="red apple")
    assert all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
        for a, b in zip(sdk.data[0].embedding, vecs[0], strict=True)
    )
    small = client.embeddings.create(model="m", input="x", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8


# -- recording and the override queue -------------------------------------------------------


def test_requests_are_recorded_with_exact_bytes(client, fake_upstream):
    raw = b'{"model":"gpt-4o",  "messages": [{"role":"user","content":"hi"}],"x-extra": 1}'
    response = httpx.post(
        f"{fake_upstream.url}/chat/completions",
        content=raw,
        headers={"content-type": "application/json", "X-Probe": "yes"},
    )
    assert response.status_code == 200
    rec = fake_upstream.last
    assert rec.body == raw and rec.json["x-extra"] == 1
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.headers["x-probe"] == "yes"
    client.chat.completions.create(model="gpt-4o", messages=user("again"))
    assert fake_upstream.last.headers["authorization"] == f"Bearer {secrets.CLIENT_KEY}"
    assert [b["messages"][-1]["content"] for b in fake_upstream.bodies()] == ["hi", "again"]
    client.models.list()
    assert len(fake_upstream.requests) == 2 and len(fake_upstream.all_requests) == 3


def test_pushed_overrides_come_first_then_responder(client, fake_upstream):
    fake_upstream.push(Reply(content="first"), Fault.server_error(), Reply(content="third"))
    assert fake_upstream.pending == 3
    ask = dict(model="gpt-4o", messages=user("q"))
    assert client.chat.completions.create(**ask).choices[0].message.content == "first"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**ask)
    assert client.chat.completions.create(**ask).choices[0].message.content == "third"
    assert client.chat.completions.create(**ask).choices[0].message.content.startswith("Echo: q")
    fake_upstream.responder = lambda body: Reply(content="custom")
    assert client.chat.completions.create(**ask).choices[0].message.content == "custom"


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "exc", "status", "code"),
    [
        (Fault.context_length_exceeded(), openai.BadRequestError, 400, "context_length_exceeded"),
        (Fault.model_not_found("gpt-x"), openai.NotFoundError, 404, "model_not_found"),
        (Fault.rate_limited(retry_after=3), openai.RateLimitError, 429, "rate_limit_exceeded"),
        (Fault.server_error(), openai.InternalServerError, 500, None),
        (Fault.server_error(503), openai.InternalServerError, 503, None),
    ],
)
def test_http_faults(client, fake_upstream, fault, exc, status, code):
    fake_upstream.push(fault)
    with pytest.raises(exc) as info:
        client.chat.completions.create(model="gpt-4o", messages=user("q"))
    assert info.value.status_code == status and info.value.code == code
    openapi_check.validate_error(info.value.response.json())
    if status == 429:
        assert info.value.response.headers["retry-after"] == "3"


def test_non_json_500(client, fake_upstream):
    fake_upstream.push(Fault.non_json())
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=user("q"))
    assert "Internal Server Error" in info.value.response.text


@pytest.mark.parametrize("stream", [False, True])
def test_dropped_connection(client, fake_upstream, stream):
    fake_upstream.push(Fault.drop())
    with pytest.raises(openai.APIConnectionError):
        result = client.chat.completions.create(model="gpt-4o", messages=user("q"), stream=stream)
        list(result) if stream else None


def test_delay_times_out_then_recovers(client, fake_upstream):
    fake_upstream.push(Fault.delay(3.0))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=user("q"))
    fake_upstream.push(Fault.delay(0.05, then=Reply(content="late")))
    late = client.chat.completions.create(model="gpt-4o", messages=user("q"))
    assert late.choices[0].message.content == "late"


def test_truncated_stream_has_no_done(client, fake_upstream):
    fake_upstream.push(Fault.truncate_stream(after_chunks=3))
    events = raw_events(client, model="gpt-4o", messages=user("a b c d e f g"))
    assert len(events) == 3 and "[DONE]" not in events
    fake_upstream.push(Fault.truncate_stream(after_chunks=3))
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=user("a b c d e f g"), stream=True)
    )
    assert len(chunks) == 3 and all(c.choices[0].finish_reason is None for c in chunks)


def test_aborted_stream_raises_connection_error(client, fake_upstream):
    fake_upstream.push(Fault.truncate_stream(after_chunks=2, abort=True))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=user("a b c"), stream=True
        ):
            received.append(chunk)
    assert len(received) == 2


def test_mid_stream_error_event(client, fake_upstream):
    fake_upstream.push(Fault.stream_error(after_chunks=2, message="boom"))
    events = raw_events(client, model="gpt-4o", messages=user("a b c"))
    assert events[-1] == "[DONE]"
    openapi_check.validate_error(json.loads(events[-2]))
    fake_upstream.push(Fault.stream_error(after_chunks=2, message="boom"))
    with pytest.raises(openai.APIError, match="boom"):
        list(client.chat.completions.create(model="gpt-4o", messages=user("a b c"), stream=True))


def test_context_window_rule(client, fake_upstream):
    fake_upstream.context_window = 30
    assert client.chat.completions.create(model="gpt-4o", messages=user("short"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=user("word " * 40))
    assert info.value.code == "context_length_exceeded"
    error = info.value.response.json()
    openapi_check.validate_error(error)
    assert error["error"]["param"] == "messages"
    assert error["error"]["message"].startswith("This model's maximum context length is 30 ")


def test_strict_models(client, fake_upstream):
    assert client.chat.completions.create(model="no-such-model", messages=user("q"))
    fake_upstream.strict_models = True
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=user("q"))
    assert info.value.code == "model_not_found"
    openapi_check.validate_error(info.value.response.json())


def test_require_api_key(fake_upstream):
    fake_upstream.require_api_key = secrets.FAKE_UPSTREAM_KEY
    bad = openai.OpenAI(base_url=fake_upstream.url, api_key=secrets.WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o", messages=user("q"))
    good = openai.OpenAI(base_url=fake_upstream.url, api_key=secrets.FAKE_UPSTREAM_KEY,
                         max_retries=0)
    assert good.chat.completions.create(model="gpt-4o", messages=user("q"))


# -- the scripted model (pure) --------------------------------------------------------------


def call_of(reply: Reply) -> tuple[str, Any]:
    assert len(reply.tool_calls) == 1, reply
    return reply.tool_calls[0]


def test_scripted_model_rules():
    def ask(text, tools=MEMORY_TOOLS, system=None):
        messages = ([{"role": "system", "content": system}] if system else []) + user(text)
        return scripted_model({"messages": messages, "tools": tools})

    assert call_of(ask("my name is Bob. Nice to meet you")) == (
        "core_memory_append",
        {"label": "human", "content": "Name: Bob"},
    )
    assert ask("What is my name?").content == "I don't know your name."
    blocks = "<memory_blocks>\n<human>\nName: Bob\n</human>\n</memory_blocks>"
    assert ask("What is my name?", system=blocks).content == "Your name is Bob."
    assert call_of(ask("Remember in archive: the code is 42")) == (
        "archival_memory_insert",
        {"content": "the code is 42"},
    )
    assert call_of(ask("Replace memory: Name: Bob => Name: Robert")) == (
        "core_memory_replace",
        {"label": "human", "old_content": "Name: Bob", "new_content": "Name: Robert"},
    )
    assert call_of(ask("Use tool lookup with {not json", tools=[tool("lookup")])) == (
        "lookup",
        "{not json",
    )
    assert ask("My name is Bob", tools=[]).content == "Tool core_memory_append is unavailable."
    history = [*user("a"), {"role": "assistant", "content": "x"}, *user("b")]
    assert scripted_model({"messages": history}).content == "Echo: b (saw 2 user messages)"


def test_scripted_model_after_tools():
    def after(name, result):
        return scripted_model(
            {
                "messages": [
                    *user("x"),
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": name, "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_9", "content": result},
                ]
            }
        ).content

    assert after("core_memory_append", "OK") == "Got it, I'll remember that."
    assert after("core_memory_replace", "Error: text not found").startswith("I could not")
    assert after("archival_memory_search", "[1] cats") == "Search results: [1] cats"
    assert after("get_weather", "sunny") == "Tool result: sunny"


# -- the servers ----------------------------------------------------------------------------


def test_server_thread_reports_failed_startup():
    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("no database")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="failed to start"):
        ServerThread(Starlette(lifespan=lifespan)).start()


def test_standalone_fake_serves_in_its_own_thread():
    fake = FakeUpstream(models=["m1"])
    with ServerThread(fake.app) as server:
        models = httpx.get(f"{server.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["m1"]


def test_subprocess_failure_includes_output(tmp_path):
    with pytest.raises(RuntimeError, match="exited with code") as info:
        run_memproxy_subprocess(
            ["--config", str(tmp_path / "missing.toml")], {}, startup_timeout_s=10
        )
    assert "output:" in str(info.value)
