"""`POST /v1/agents/{a}/conversations` (docs/api.md) on a real server, both backends: an empty
conversation made ahead of its first turn (the inspector's Chat panel makes one so it can be
picked before anything is said), its errors, tenant scoping, and the turn that then runs in it
through Letta's step stream. Every response is validated against the served OpenAPI document
(tests/agents_api_check.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.agents_api_check import AgentsApi
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
AUTH = {"auth": {"keys": {"key-a": "tenant-a", "key-b": "tenant-b"}}}


@pytest.fixture
def server(make_proxy):
    return make_proxy(AUTH)


@pytest.fixture
def api(server):
    return AgentsApi.connect(server.url, "key-a")


def error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    validate_error(response.json())
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        code, param)


def conversations(api: AgentsApi, agent: str = "ada") -> dict[str, dict]:
    return {c["id"]: c for c in api.get(f"/v1/agents/{agent}/conversations").json()["data"]}


def test_create_an_empty_conversation_then_talk_in_it(server, api):
    assert api.post("/v1/agents", json={"id": "ada", "settings": {"model": MODEL}}
                    ).status_code == 201
    created = api.post("/v1/agents/ada/conversations", json={"id": "chat-2"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["object"], body["id"], body["messages"], body["last_message_at"]) == (
        "conversation", "chat-2", 0, None)
    assert conversations(api)["chat-2"]["messages"] == 0
    # a turn in it (the agent's settings.model): stored there, not in `default`
    with httpx.stream("POST", f"{server.url}/v1/agents/ada/messages/stream", timeout=30,
                      headers={"Authorization": "Bearer key-a"},
                      json={"input": "My name is Ada", "conversation_id": "chat-2"}) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    kinds = [json.loads(line[6:])["message_type"] for line in lines[:-1]]
    assert kinds == ["tool_call_message", "tool_return_message", "assistant_message",
                     "stop_reason", "usage_statistics"]
    listed = conversations(api)
    assert listed["chat-2"]["messages"] == 2 and "default" not in listed
    # taken: 409, nothing changed
    error(api.post("/v1/agents/ada/conversations", json={"id": "chat-2"}), 409, "conflict", "id")
    assert conversations(api)["chat-2"]["messages"] == 2


def test_deleted_then_created_again_is_empty_and_usable(server, api):
    api.post("/v1/agents", json={"id": "ada"})
    assert api.post("/v1/agents/ada/conversations", json={"id": "c"}).status_code == 201
    say = {"input": "hello", "conversation_id": "c", "model": MODEL}
    assert api.post("/v1/agents/ada/messages", json=say).status_code == 200
    assert api.delete("/v1/agents/ada/conversations/c").status_code == 200
    assert api.post("/v1/agents/ada/conversations", json={"id": "c"}).status_code == 201
    assert conversations(api)["c"]["messages"] == 0
    answer = api.post("/v1/agents/ada/messages", json=say).json()
    assert answer["messages"][-1]["content"] == "Echo: hello (saw 1 user messages)"


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({}, 400, "invalid_body", "id"),
    ({"id": ""}, 400, "invalid_id", "id"),
    ({"id": "a/b"}, 400, "invalid_id", "id"),
    ({"id": ".."}, 400, "invalid_id", "id"),
    ({"id": 5}, 400, "invalid_body", "id"),
    ({"id": "x", "title": "t"}, 400, "invalid_body", "title"),
])
def test_bad_bodies(api, body, status, code, param):
    api.post("/v1/agents", json={"id": "ada"})
    error(api.post("/v1/agents/ada/conversations", json=body), status, code, param)
    assert conversations(api) == {}


def test_unknown_agent_and_other_tenants(server, api):
    error(api.post("/v1/agents/nobody/conversations", json={"id": "c"}), 404, "not_found", None)
    assert api.get("/v1/agents/nobody").status_code == 404  # not created on the way
    api.post("/v1/agents", json={"id": "ada"})
    other = AgentsApi.connect(server.url, "key-b")
    error(other.post("/v1/agents/ada/conversations", json={"id": "c"}), 404, "not_found", None)
    assert conversations(api) == {}
    not_json = httpx.post(f"{server.url}/v1/agents/ada/conversations", content=b"{",
                          headers={"Authorization": "Bearer key-a",
                                   "content-type": "application/json"})
    error(not_json, 400, "invalid_json", None)
