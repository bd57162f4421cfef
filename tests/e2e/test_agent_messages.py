"""Agents as a service (docs/agents-as-a-service.md), on both backends: Letta's
`POST /v1/agents/{a}/messages` runs one stateful turn and answers with its messages (internal
memory steps included), a stop reason and usage; an `otid` retry stores nothing twice; the
stream variant; every error; and the rest of one OpenAI base URL under an agent's (models,
embeddings, legacy completions) with openai-python."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.agents_api_check import AgentsApi
from tests.fakes import Fault, Reply

MODEL = "gpt-4o-mini"
TYPES_OF_AN_EDIT = ["tool_call_message", "tool_return_message", "assistant_message"]


@pytest.fixture
def server(make_proxy):
    return make_proxy({"upstream": {"max_retries": 0}})


@pytest.fixture
def api(server):
    return AgentsApi.connect(server.url)


def say(api: AgentsApi, text: str, agent: str = "ada", **extra) -> httpx.Response:
    message = {"role": "user", "content": text}
    if "otid" in extra:
        message["otid"] = extra.pop("otid")
    return api.post(f"/v1/agents/{agent}/messages", json={"messages": [message], **extra})


def rows(api: AgentsApi, agent: str = "ada", conversation: str = "default") -> list[dict]:
    page = api.get(f"/v1/agents/{agent}/conversations/{conversation}/messages",
                   params={"include_superseded": "true"})
    return page.json()["data"]


def types(response: dict) -> list[str]:
    return [m["message_type"] for m in response["messages"]]


def test_a_memory_edit_turn_its_replay_and_the_next_turn(api, fake_upstream):
    sent = say(api, "My name is Ada", model=MODEL, otid="otid-1")
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert types(body) == TYPES_OF_AN_EDIT
    call, result, answer = body["messages"]
    assert call["tool_call"]["name"] == "core_memory_append"
    assert json.loads(call["tool_call"]["arguments"]) == {"label": "human",
                                                           "content": "Name: Ada"}
    assert (result["tool_call_id"], result["status"], result["name"]) == (
        call["tool_call"]["tool_call_id"], "success", "core_memory_append")
    assert answer["content"] == "Got it, I'll remember that."
    assert body["stop_reason"] == {"message_type": "stop_reason", "stop_reason": "end_turn"}
    usage = body["usage"]
    assert (usage["message_type"], usage["step_count"]) == ("usage_statistics", 2)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert len({m["id"] for m in body["messages"]}) == 3
    assert all(m["date"].endswith("Z") for m in body["messages"])
    assert api.get("/v1/agents/ada/blocks/human").json()["value"] == "Name: Ada"
    stored = rows(api)
    assert [r["role"] for r in stored] == ["user", "assistant", "tool", "assistant"]
    calls = len(fake_upstream.requests)

    # the same otid again: the stored turn, nothing stored, no upstream call
    again = say(api, "My name is Ada", model=MODEL, otid="otid-1")
    assert again.json() == body
    assert again.headers["x-memproxy-replayed"] == "true"
    assert rows(api) == stored and len(fake_upstream.requests) == calls

    # the next turn needs no model (the last turn's), and sees the memory
    named = say(api, "What is my name?", otid="otid-2").json()
    assert types(named) == ["assistant_message"]
    assert named["messages"][0]["content"] == "Your name is Ada."
    assert named["usage"]["step_count"] == 1
    assert fake_upstream.last.json["model"] == MODEL
    assert len(rows(api)) == 6

    # an edit by replacement, through the chat endpoint's conversation: the same memory
    replaced = say(api, "Replace memory: Name: Ada => Name: Ada Lovelace").json()
    assert types(replaced) == TYPES_OF_AN_EDIT
    assert replaced["messages"][0]["tool_call"]["name"] == "core_memory_replace"
    assert api.get("/v1/agents/ada/blocks/human").json()["value"] == "Name: Ada Lovelace"


def test_text_without_otid_is_a_new_turn_each_time(api):
    first = say(api, "hello", model=MODEL).json()
    second = say(api, "hello", model=MODEL).json()
    assert first["messages"][0]["content"].startswith("Echo: hello")
    assert first["messages"][0]["id"] != second["messages"][0]["id"]
    assert len(rows(api)) == 4


def test_an_otid_retry_of_a_failed_turn_continues_it(api, fake_upstream):
    fake_upstream.push(Fault.http(500, "boom", type="server_error"))
    failed = say(api, "My name is Ada", model=MODEL, otid="o-9")
    assert failed.status_code == 500 and failed.json()["error"]
    assert [r["role"] for r in rows(api)] == ["user"]
    retried = say(api, "My name is Ada", model=MODEL, otid="o-9")
    assert types(retried.json()) == TYPES_OF_AN_EDIT
    assert [r["role"] for r in rows(api)] == ["user", "assistant", "tool", "assistant"]
    replayed = say(api, "My name is Ada", model=MODEL, otid="o-9")  # the continued turn
    assert replayed.json() == retried.json() and replayed.headers["x-memproxy-replayed"]
    assert len(rows(api)) == 4


def test_options_model_settings_conversations_and_filters(api, fake_upstream):
    api.post("/v1/agents", json={"id": "bob", "settings": {"model": "gpt-4o"}})
    plain = say(api, "hi", agent="bob", conversation_id="side",
                include_return_message_types=["assistant_message"],
                use_assistant_message=True, stream_tokens=False).json()
    assert fake_upstream.last.json["model"] == "gpt-4o"
    assert types(plain) == ["assistant_message"]
    assert [r["role"] for r in rows(api, "bob", "side")] == ["user", "assistant"]
    filtered = say(api, "My name is Bob", agent="bob",
                   include_return_message_types=["tool_call_message"]).json()
    assert types(filtered) == ["tool_call_message"] and filtered["usage"]["step_count"] == 2

    # system text reaches the prompt, not the transcript; text parts are joined
    api.post("/v1/agents/bob/messages", json={"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "part one"}]}]})
    assert "Be brief." in fake_upstream.last.json["messages"][0]["content"]
    assert rows(api, "bob")[-2]["role"] == "user"

    # one step allowed: the model is told to answer without tools
    one = say(api, "My name is Carl", agent="bob", max_steps=1).json()
    assert types(one) == ["assistant_message"] and one["usage"]["step_count"] == 1
    assert fake_upstream.last.json["tool_choice"] == "none"


def test_letta_shorthands_input_override_model_override_system_and_streaming(server, api,
                                                                             fake_upstream):
    body = api.post("/v1/agents/ada/messages", json={
        "input": "My name is Ada", "override_model": "gpt-4o",
        "override_system": "Speak plainly."}).json()
    assert types(body) == TYPES_OF_AN_EDIT
    assert fake_upstream.last.json["model"] == "gpt-4o"
    assert "Speak plainly." in fake_upstream.last.json["messages"][0]["content"]
    parts = api.post("/v1/agents/ada/messages", json={
        "input": [{"type": "text", "text": "What is my name?"}]}).json()
    assert parts["messages"][0]["content"] == "Your name is Ada."
    assert [r["role"] for r in rows(api)][-2:] == ["user", "assistant"]
    # Letta's `streaming: true` on the plain endpoint: the stream's events
    with httpx.stream("POST", f"{server.url}/v1/agents/ada/messages", timeout=30, json={
            "input": "hello", "streaming": True, "client_tools": []}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == 4
    assert json.loads(lines[0].removeprefix("data: "))["message_type"] == "assistant_message"


def test_max_steps_stop_reason(api, fake_upstream):
    fake_upstream.push(*[Reply(tool_calls=[("core_memory_append",
                                            {"label": "human", "content": f"x{i}"})])
                         for i in range(2)])
    body = say(api, "keep going", model=MODEL, max_steps=2).json()
    assert body["stop_reason"]["stop_reason"] == "max_steps"
    assert types(body) == ["tool_call_message", "tool_return_message", "assistant_message"]
    assert body["usage"]["step_count"] == 2


def test_stream(server, api, fake_upstream):
    with httpx.stream("POST", f"{server.url}/v1/agents/ada/messages/stream", timeout=30,
                      json={"messages": [{"role": "user", "content": "My name is Ada",
                                          "otid": "s-1"}], "model": MODEL}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert [e["message_type"] for e in events] == [
        *TYPES_OF_AN_EDIT, "stop_reason", "usage_statistics"]
    assert events[-2]["stop_reason"] == "end_turn" and events[-1]["step_count"] == 2
    # the non-stream endpoint with the same otid: the same messages, from the store
    replayed = say(api, "My name is Ada", model=MODEL, otid="s-1").json()
    assert replayed["messages"] == events[:3]
    assert len(rows(api)) == 4


def stream_events(server, body: dict) -> tuple[int, list]:
    """POST to /messages/stream: the status and the decoded events (`[DONE]` as a string)."""
    with httpx.stream("POST", f"{server.url}/v1/agents/ada/messages/stream", timeout=30,
                      json=body) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        lines = [line for line in response.iter_lines() if line]
    return 200, [line.removeprefix("data: ") if line == "data: [DONE]"
                 else json.loads(line.removeprefix("data: ")) for line in lines]


def test_stream_sends_memory_steps_as_they_happen(server, api, fake_upstream):
    """A memory step is sent when it has run, before the next model call: a failure of that
    call reaches the client after the step, as an error event and `stop_reason: error`."""
    fake_upstream.push(Reply(tool_calls=[("core_memory_append",
                                          {"label": "human", "content": "Name: Ada"})]),
                       Fault.http(500, "boom", type="server_error"))
    status, events = stream_events(server, {"messages": [
        {"role": "user", "content": "My name is Ada", "otid": "live-1"}], "model": MODEL})
    assert status == 200
    assert [e.get("message_type") if isinstance(e, dict) else e for e in events] == [
        "tool_call_message", "tool_return_message", None, "stop_reason", "[DONE]"]
    call, result, error, stop = events[:4]
    assert call["tool_call"]["name"] == result["name"] == "core_memory_append"
    assert result["status"] == "success"
    assert error["error"]["message"] and stop["stop_reason"] == "error"
    assert len(fake_upstream.requests) == 2
    # the failed turn kept its input; the same otid continues it, and the finished turn's
    # messages carry the ids the live stream gave its first step
    status, again = stream_events(server, {"messages": [
        {"role": "user", "content": "My name is Ada", "otid": "live-1"}], "model": MODEL})
    assert status == 200
    assert [e["message_type"] for e in again[:-1]] == [
        *TYPES_OF_AN_EDIT, "stop_reason", "usage_statistics"]
    assert api.get("/v1/agents/ada/blocks/human").json()["value"] == "Name: Ada"
    replayed = say(api, "My name is Ada", otid="live-1").json()
    assert replayed["messages"] == again[:3]


def test_stream_ids_match_the_stored_turn_and_filters_apply(server, api):
    status, events = stream_events(server, {
        "input": "My name is Ada", "model": MODEL, "streaming": True,
        "include_return_message_types": ["tool_return_message", "assistant_message"]})
    assert status == 200
    assert [e["message_type"] for e in events[:-1]] == [
        "tool_return_message", "assistant_message", "stop_reason", "usage_statistics"]
    turn = rows(api)[-1]["turn_id"]
    assert [e["id"] for e in events[:2]] == [f"message-{turn}-1", f"message-{turn}-2"]
    assert events[0]["date"] == events[1]["date"]


def test_stream_tokens_sends_the_answer_in_chunks_of_its_stored_id(server, api, fake_upstream):
    """Letta's `stream_tokens: true`: the memory steps whole, the answer as `assistant_message`
    chunks that share the id the stored message has (and are not sent again whole)."""
    status, events = stream_events(server, {"messages": [
        {"role": "user", "content": "My name is Ada", "otid": "tok-1"}], "model": MODEL,
        "stream_tokens": True})
    assert status == 200 and events[-1] == "[DONE]"
    assert fake_upstream.last.json["stream"] is True
    kinds = [e["message_type"] for e in events[:-1]]
    assert kinds[:2] == ["tool_call_message", "tool_return_message"]
    assert kinds[-2:] == ["stop_reason", "usage_statistics"]
    chunks = events[2:-3]
    assert len(chunks) > 1 and {c["message_type"] for c in chunks} == {"assistant_message"}
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["content"] for c in chunks) == "Got it, I'll remember that."
    replayed = say(api, "My name is Ada", otid="tok-1").json()
    assert replayed["messages"][:2] == events[:2]
    answer = replayed["messages"][2]
    assert (answer["id"], answer["date"]) == (chunks[0]["id"], chunks[0]["date"])
    assert answer["content"] == "Got it, I'll remember that."
    # filtered out, the chunks are not sent either
    status, quiet = stream_events(server, {"input": "hello", "model": MODEL, "stream_tokens": True,
                                           "include_return_message_types": ["tool_call_message"]})
    assert [e["message_type"] for e in quiet[:-1]] == ["stop_reason", "usage_statistics"]


def test_stream_tokens_text_beside_a_memory_call_is_resent_as_reasoning(server, api,
                                                                         fake_upstream):
    fake_upstream.push(Reply(content="Let me note that.", tool_calls=[
        ("core_memory_append", {"label": "human", "content": "Name: Ada"})]))
    status, events = stream_events(server, {"input": "My name is Ada", "model": MODEL,
                                            "stream_tokens": True})
    assert status == 200
    messages = events[:-3]
    side = [e for e in messages if e["id"] == messages[0]["id"]]
    assert {e["message_type"] for e in side} == {"assistant_message", "reasoning_message"}
    assert "".join(e["content"] for e in side if e["message_type"] == "assistant_message") == (
        "Let me note that.")
    whole = side[-1]
    assert whole["message_type"] == "reasoning_message"
    assert whole["reasoning"] == "Let me note that."
    rest = messages[len(side):]
    assert [e["message_type"] for e in rest[:2]] == ["tool_call_message", "tool_return_message"]
    answer = rest[2:]
    assert "".join(e["content"] for e in answer) == "Got it, I'll remember that."
    turn = rows(api)[-1]["turn_id"]
    assert {e["id"] for e in answer} == {f"message-{turn}-3"}


def test_stream_errors_of_the_first_step_keep_their_status(server, api, fake_upstream):
    fake_upstream.push(Fault.http(500, "boom", type="server_error"))
    status, events = stream_events(server, {"input": "hello", "model": MODEL})
    assert status == 500, events
    assert events[0]["error"]["message"]
    fake_upstream.push(Fault.http(400, "bad model", param="model"))
    status, events = stream_events(server, {"input": "hello", "model": MODEL})
    assert status == 400 and "bad model" in events[0]["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "url": "u"}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x", "otid": ""}]}, "messages[0].otid"),
    ({"messages": [{"role": "user", "content": "x"}], "max_steps": 0}, "max_steps"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}],
      "include_return_message_types": ["user_message"]}, "include_return_message_types[0]"),
    ({"messages": "hi"}, "messages"),
    ({"input": "x", "messages": [{"role": "user", "content": "x"}]}, "input"),
    ({"input": 5}, "input"),
    ({"input": "x", "client_tools": [{"name": "f"}]}, "client_tools"),
    ({"input": "x", "override_model": ""}, "override_model"),
    ({"input": "x", "streaming": "yes"}, "streaming"),
])
def test_bad_bodies_are_400_and_store_nothing(api, body, param):
    for path in ("/v1/agents/ada/messages", "/v1/agents/ada/messages/stream"):
        response = api.post(path, json={**body, "model": MODEL})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith(param)  # a union names its branch
    assert api.get("/v1/agents/ada").status_code == 404


def test_other_errors(api, server):
    no_model = say(api, "hi")
    assert no_model.status_code == 400
    assert (no_model.json()["error"]["code"], no_model.json()["error"]["param"]) == (
        "model_required", "model")
    assert api.get("/v1/agents/ada").status_code == 404  # nothing created
    assert say(api, "hi", agent="bad agent", model=MODEL).status_code == 400
    bad_conversation = say(api, "hi", model=MODEL, conversation_id="a/b")
    assert bad_conversation.json()["error"]["param"] == "conversation_id"
    not_json = httpx.post(f"{server.url}/v1/agents/ada/messages", content=b"{",
                          headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]
    # an unknown agent is created on first use, as on the chat endpoint
    assert say(api, "hi", agent="newcomer", model=MODEL).status_code == 200
    assert api.get("/v1/agents/newcomer").status_code == 200


def test_upstream_rejection_is_its_error_and_keeps_nothing(api, fake_upstream):
    fake_upstream.push(Fault.http(400, "bad model", param="model"))
    rejected = say(api, "hi", model=MODEL, otid="r-1")
    assert rejected.status_code == 400 and "bad model" in rejected.json()["error"]["message"]
    assert all(r["superseded"] for r in rows(api))


def test_openapi_documents_the_endpoints(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/agents/{agent}/messages"]
    assert "get" in paths["/v1/agents/{agent}/messages"]  # the search is still there
    answers = paths["/v1/agents/{agent}/messages"]["post"]["responses"]["200"]["content"]
    assert set(answers) == {"application/json", "text/event-stream"}
    streamed = paths["/v1/agents/{agent}/messages/stream"]["post"]["responses"]["200"]
    assert set(streamed["content"]) == {"text/event-stream"}


@pytest.mark.parametrize("base", ["/agents/ada/v1", "/agents/ada/conversations/c1/v1", "/v1",
                                  ""])
def test_one_base_url_serves_models_embeddings_and_completions(server, fake_upstream, base):
    client = server.client(base_url=f"{server.url}{base}")
    assert [m.id for m in client.models.list()] == fake_upstream.model_ids()
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(e.embedding) for e in embedded.data] == [64, 64]
    completed = client.completions.create(model=MODEL, prompt="Say hi")
    assert completed.choices[0].text == "Echo: Say hi"
    paths = [r.path for r in fake_upstream.all_requests]
    assert paths == ["/v1/models", "/v1/embeddings", "/v1/completions"]
    assert fake_upstream.requests == []  # none of them is a turn


def test_completions_pass_through_upstream_errors(server, fake_upstream):
    fake_upstream.require_api_key = "upstream-key"
    response = httpx.post(f"{server.url}/agents/ada/v1/completions",
                          json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
