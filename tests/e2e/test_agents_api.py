"""The agents REST API (docs/api.md) on a real server, both backends: agents CRUD, tenant
scoping, hostile ids, bad bodies and parameters, and the served OpenAPI document. Every
response is validated against that document (tests/agents_api_check.py)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.agents_api_check import AgentsApi
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
AUTH = {"auth": {"keys": {"key-a": "tenant-a", "key-b": "tenant-b"},
                 "admin_keys": ["admin-key"]}}


@pytest.fixture
def server(make_proxy):
    return make_proxy(AUTH)


@pytest.fixture
def api(server):
    """Tenant A's client."""
    return AgentsApi.connect(server.url, "key-a")


def error(response: httpx.Response, status: int, code: str | None = None,
          param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    validate_error(body)
    if code is not None:
        assert body["error"]["code"] == code, body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


@pytest.fixture
def secret(server, api, fake_upstream):
    """Tenant A's agent `alice`: a fact in memory, a conversation, a passage, a custom block."""
    server.client(api_key="key-a").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}],
        extra_headers={"X-Agent-Id": "alice", "X-Conversation-Id": "secret-chat"})
    api.post("/v1/agents/alice/passages", json={"text": "Ada's locker code is 4711"})
    api.put("/v1/agents/alice/blocks/diary", json={"value": "Ada hid the key"})
    return "alice"


# --- agents ------------------------------------------------------------------------------------
def test_create_read_list_patch_delete(api, server):
    created = api.post("/v1/agents", json={
        "id": "bob", "settings": {"tone": "dry", "keep": 1},
        "blocks": [{"label": "persona", "value": "A butler.", "limit": 100},
                   {"label": "tasks", "value": "", "description": "to do", "read_only": True}]})
    assert created.status_code == 201
    bob = created.json()
    assert (bob["id"], bob["tenant"], bob["settings"]) == ("bob", "tenant-a",
                                                           {"tone": "dry", "keep": 1})
    assert [(b["label"], b["value"], b["limit"], b["read_only"], b["chars"]) for b in
            bob["blocks"]] == [("persona", "A butler.", 100, False, 9),
                               ("tasks", "", 5000, True, 0)]
    assert bob["stats"] == {"conversations": 0, "messages": 0, "passages": 0}
    # without blocks: the configured default blocks
    default = api.post("/v1/agents", json={"id": "carol"}).json()
    assert [b["label"] for b in default["blocks"]] == ["persona", "human"]
    assert error(api.post("/v1/agents", json={"id": "bob"}), 409, "conflict")["param"] == "id"

    got = api.get("/v1/agents/bob").json()
    assert got == bob | {"stats": got["stats"]}
    listed = api.get("/v1/agents").json()
    assert [a["id"] for a in listed["data"]] == ["bob", "carol"]
    assert "blocks" not in listed["data"][0] and listed["has_more"] is False
    page = api.get("/v1/agents", params={"limit": 1}).json()
    assert ([a["id"] for a in page["data"]], page["has_more"], page["next_after"]) == (
        ["bob"], True, "bob")
    rest = api.get("/v1/agents", params={"limit": 1, "after": page["next_after"]}).json()
    assert ([a["id"] for a in rest["data"]], rest["has_more"], rest["next_after"]) == (
        ["carol"], False, None)

    patched = api.patch("/v1/agents/bob", json={"settings": {"tone": None, "model": "m"}})
    assert patched.json()["settings"] == {"keep": 1, "model": "m"}
    assert api.get("/v1/agents/bob").json()["settings"] == {"keep": 1, "model": "m"}

    deleted = api.delete("/v1/agents/bob")
    assert deleted.json() == {"object": "agent.deleted", "id": "bob", "deleted": True}
    error(api.get("/v1/agents/bob"), 404, "not_found")
    error(api.delete("/v1/agents/bob"), 404, "not_found")
    assert [a["id"] for a in api.get("/v1/agents").json()["data"]] == ["carol"]


def test_a_deleted_agent_starts_afresh_in_chat(api, server, fake_upstream):
    client = server.client(api_key="key-a")
    ask = {"model": MODEL, "extra_headers": {"X-Agent-Id": "dora"}}
    client.chat.completions.create(messages=[{"role": "user", "content": "My name is Dora"}],
                                   **ask)
    assert api.get("/v1/agents/dora").json()["stats"]["messages"] == 2
    api.delete("/v1/agents/dora")
    reply = client.chat.completions.create(
        messages=[{"role": "user", "content": "What is my name?"}], **ask)
    assert reply.choices[0].message.content == "I don't know your name."
    assert "Dora" not in json.dumps(fake_upstream.last.json)
    assert api.get("/v1/agents/dora").json()["stats"]["messages"] == 2


def test_admin_sees_every_tenant_and_picks_one(server, api, secret):
    b = api.as_key("key-b")
    b.post("/v1/agents", json={"id": "alice"})  # tenant B's own alice
    admin = api.as_key("admin-key")
    every = admin.get("/v1/agents").json()
    assert [(a["tenant"], a["id"]) for a in every["data"]] == [("tenant-a", "alice"),
                                                               ("tenant-b", "alice")]
    page = admin.get("/v1/agents", params={"limit": 1}).json()
    assert page["next_after"] == "tenant-a/alice"
    rest = admin.get("/v1/agents", params={"after": page["next_after"]}).json()
    assert [(a["tenant"], a["id"]) for a in rest["data"]] == [("tenant-b", "alice")]
    error(admin.get("/v1/agents", params={"after": "alice"}), 400, "invalid_parameter",
          "after")
    only_b = admin.get("/v1/agents", params={"tenant": "tenant-b"}).json()
    assert [(a["tenant"], a["id"]) for a in only_b["data"]] == [("tenant-b", "alice")]
    a_alice = admin.get("/v1/agents/alice", params={"tenant": "tenant-a"}).json()
    assert "Name: Ada" in json.dumps(a_alice)
    error(admin.get("/v1/agents/alice"), 404)  # the default tenant has no alice
    created = admin.post("/v1/agents", params={"tenant": "tenant-c"}, json={"id": "eve"})
    assert created.json()["tenant"] == "tenant-c"
    assert [a["id"] for a in api.as_key("key-b").get("/v1/agents").json()["data"]] == ["alice"]
    error(admin.get("/v1/agents", params={"tenant": ""}), 400, "invalid_parameter", "tenant")


def test_no_or_wrong_key_is_401(api):
    for key in (None, "wrong"):
        client = api.as_key(key)
        error(client.get("/v1/agents"), 401)
        error(client.post("/v1/agents", json={"id": "x"}), 401)


# --- tenant isolation ---------------------------------------------------------------------------
OTHER_TENANT_CALLS = [
    ("GET", "/v1/agents/alice", None),
    ("PATCH", "/v1/agents/alice", {"settings": {"x": 1}}),
    ("DELETE", "/v1/agents/alice", None),
    ("GET", "/v1/agents/alice/blocks", None),
    ("GET", "/v1/agents/alice/blocks/human", None),
    ("PUT", "/v1/agents/alice/blocks/human", {"value": "owned"}),
    ("DELETE", "/v1/agents/alice/blocks/diary", None),
    ("GET", "/v1/agents/alice/blocks/human/history", None),
    ("POST", "/v1/agents/alice/blocks/human/undo", {}),
    ("GET", "/v1/agents/alice/conversations", None),
    ("GET", "/v1/agents/alice/conversations/secret-chat/messages", None),
    ("GET", "/v1/agents/alice/messages?query=Ada", None),
    ("GET", "/v1/agents/alice/passages", None),
    ("POST", "/v1/agents/alice/passages", {"text": "planted"}),
    ("DELETE", "/v1/agents/alice/passages/1", None),
    ("GET", "/v1/agents/alice/context?conversation=secret-chat", None),
    ("GET", "/v1/agents/alice/export", None),
]


def test_another_tenants_agent_is_not_found(api, secret):
    b = api.as_key("key-b")
    for method, path, body in OTHER_TENANT_CALLS:
        for suffix in ("", "&tenant=tenant-a" if "?" in path else "?tenant=tenant-a"):
            response = b.request(method, path + suffix, json=body)
            assert response.status_code == 404, (method, path + suffix, response.text)
            assert response.json()["error"]["code"] == "not_found"
            assert "Ada" not in response.text and "4711" not in response.text
            assert "secret" not in response.text.replace("secret-chat", "")
    # nothing changed for the owner
    alice = api.get("/v1/agents/alice").json()
    assert {b["label"]: b["value"] for b in alice["blocks"]}["human"] == "Name: Ada"
    assert alice["stats"] == {"conversations": 1, "messages": 2, "passages": 1}
    assert alice["settings"] == {}


def test_another_tenant_lists_and_searches_nothing_of_alice(api, secret):
    b = api.as_key("key-b")
    assert b.get("/v1/agents").json()["data"] == []
    b.post("/v1/agents", json={"id": "alice"})  # the same id in tenant B: a different agent
    mine = b.get("/v1/agents/alice").json()
    assert "Ada" not in json.dumps(mine) and mine["stats"]["passages"] == 0
    for path in ("/v1/agents/alice/messages?query=Ada", "/v1/agents/alice/passages?query=Ada",
                 "/v1/agents/alice/conversations", "/v1/agents/alice/export"):
        assert "Ada" not in b.get(path).text
    error(b.get("/v1/agents/alice/conversations/secret-chat/messages"), 404, "not_found")
    error(b.get("/v1/agents/alice/blocks/diary"), 404, "not_found")


# (A literal "." or ".." segment never arrives: clients resolve it before sending.)
HOSTILE = ["../alice", "alice%2F..", "alice%2Fblocks", "..%2Falice", "alice'", 'ali"ce',
           "ālice", "%00", "a%20b", "a" * 250, "%2E%2E", "%2e", "alice;drop"]


AGENT_PATHS = ["/v1/agents/{}", "/v1/agents/{}/blocks", "/v1/agents/{}/blocks/human/history",
               "/v1/agents/{}/conversations/secret-chat/messages", "/v1/agents/{}/export"]


def test_hostile_agent_ids_never_reach_another_tenant(api, secret):
    b = api.as_key("key-b")
    for agent in HOSTILE:
        for template in AGENT_PATHS:
            response = b.get(template.format(agent))
            assert response.status_code in (400, 404), (template, agent, response.text)
            validate_error(response.json())
            assert "Ada" not in response.text and "4711" not in response.text


def test_hostile_labels_and_conversation_ids(api, secret):
    for segment in ["%2E%2E", "a%2Fb", "it's", "ü" * 201, "%00", "a b"]:
        for path in (f"/v1/agents/alice/blocks/{segment}", f"/v1/agents/alice/blocks/{segment}"
                     "/history", f"/v1/agents/alice/conversations/{segment}/messages"):
            response = api.get(path)
            assert response.status_code in (400, 404), (path, response.text)
            validate_error(response.json())
            assert "Ada" not in response.text
        response = api.put(f"/v1/agents/alice/blocks/{segment}", json={"value": "x"})
        assert response.status_code in (400, 404, 405), (segment, response.text)
    assert {b["label"] for b in api.get("/v1/agents/alice/blocks").json()["data"]} == {
        "persona", "human", "diary"}


# --- bad bodies and parameters -----------------------------------------------------------------
BAD_BODIES = [
    ("POST", "/v1/agents", {"id": "x", "colour": "red"}, "colour"),
    ("POST", "/v1/agents", {"settings": {}}, "id"),
    ("POST", "/v1/agents", {"id": 7}, "id"),
    ("POST", "/v1/agents", {"id": "x/y"}, "id"),
    ("POST", "/v1/agents", {"id": "x", "blocks": [{"label": "a", "valu": "typo"}]},
     "blocks[0].valu"),
    ("POST", "/v1/agents", {"id": "x", "blocks": [{"label": "a b"}]}, "blocks[0].label"),
    ("POST", "/v1/agents", {"id": "x", "blocks": [{"label": "a"}, {"label": "a"}]},
     "blocks[1].label"),
    ("POST", "/v1/agents", {"id": "x", "blocks": [{"label": "a", "limit": 0}]},
     "blocks[0].limit"),
    ("POST", "/v1/agents", {"id": "x", "blocks": [{"label": "a", "value": "long",
                                                   "limit": 3}]}, "blocks[0].value"),
    ("POST", "/v1/agents", {"id": "x", "settings": []}, "settings"),
    ("PATCH", "/v1/agents/alice", {"settings": {"a": 1}, "extra": True}, "extra"),
    ("PATCH", "/v1/agents/alice", {}, "settings"),
    ("PUT", "/v1/agents/alice/blocks/human", {"value": "x", "lmit": 3}, "lmit"),
    ("PUT", "/v1/agents/alice/blocks/human", {"value": None}, "value"),
    ("PUT", "/v1/agents/alice/blocks/human", {"value": "x", "read_only": "yes"}, "read_only"),
    ("PUT", "/v1/agents/alice/blocks/human", {"value": "toolong", "limit": 3}, "value"),
    ("POST", "/v1/agents/alice/blocks/human/undo", {"revision": "last"}, "revision"),
    ("POST", "/v1/agents/alice/blocks/human/undo", {"revisions": 1}, "revisions"),
    ("POST", "/v1/agents/alice/passages", {"text": ""}, "text"),
    ("POST", "/v1/agents/alice/passages", {"text": "x", "tags": "a"}, "tags"),
    ("POST", "/v1/agents/alice/passages", {"text": "x", "tag": ["a"]}, "tag"),
    ("POST", "/v1/agents/import", {"format": "memproxy.agent", "version": 2}, "version"),
]


def test_bad_bodies_are_400_naming_the_field(api, secret):
    before = api.get("/v1/agents/alice").json()
    history = api.get("/v1/agents/alice/blocks/human/history").json()
    for method, path, body, param in BAD_BODIES:
        response = api.request(method, path, json=body)
        assert response.status_code == 400, (method, path, body, response.text)
        err = response.json()["error"]
        assert err["param"] == param, (body, err)
        assert err["code"] in ("invalid_body", "invalid_id", "duplicate_label",
                               "block_too_long", "invalid_document"), err
    assert api.get("/v1/agents/alice").json() == before  # nothing changed
    assert api.get("/v1/agents/alice/blocks/human/history").json() == history
    assert [a["id"] for a in api.get("/v1/agents").json()["data"]] == ["alice"]


def test_malformed_json_is_400(api):
    for raw in [b"{", b"[]", b"\"text\"", b"\xff\xfe", b"{\"id\": \"x\"}x"]:
        error(api.post("/v1/agents", content=raw,
                       headers={"content-type": "application/json"}), 400, "invalid_json")


def test_oversized_body_is_413(make_proxy):
    server = make_proxy({"limits": {"max_body_bytes": 1000}})
    api = AgentsApi.connect(server.url)
    api.post("/v1/agents", json={"id": "big"})
    error(api.put("/v1/agents/big/blocks/human", json={"value": "x" * 2000}), 413,
          "request_too_large")
    assert api.get("/v1/agents/big/blocks/human").json()["value"] == ""


BAD_PARAMETERS = [
    ("/v1/agents", {"limit": "0"}, "limit"),
    ("/v1/agents", {"limit": "1001"}, "limit"),
    ("/v1/agents", {"limit": "ten"}, "limit"),
    ("/v1/agents/alice/blocks/human/history", {"limit": "-1"}, "limit"),
    ("/v1/agents/alice/conversations/secret-chat/messages", {"after": "x"}, "after"),
    ("/v1/agents/alice/conversations/secret-chat/messages", {"after": "-3"}, "after"),
    ("/v1/agents/alice/conversations/secret-chat/messages", {"before": "0"}, "before"),
    ("/v1/agents/alice/conversations/secret-chat/messages", {"order": "newest"}, "order"),
    ("/v1/agents/alice/context", {"format": "html"}, "format"),
    ("/v1/agents/alice/conversations/secret-chat/messages", {"include_superseded": "maybe"},
     "include_superseded"),
    ("/v1/agents/alice/messages", {"roles": "user,system"}, "roles"),
    ("/v1/agents/alice/messages", {"roles": "user,,assistant"}, "roles"),
    ("/v1/agents/alice/passages", {"offset": "-1"}, "offset"),
    ("/v1/agents/alice/passages", {"tags": "a,"}, "tags"),
    ("/v1/agents/alice/context", {"conversation": "../x"}, "conversation"),
    # NUL: Postgres text cannot hold it; both backends refuse it alike
    ("/v1/agents", {"after": "a\x00b"}, "after"),
    ("/v1/agents", {"tenant": "t\x00"}, "tenant"),
    ("/v1/agents/alice/context", {"model": "gpt\x00"}, "model"),
    ("/v1/agents/alice/passages", {"query": "\x00"}, "query"),
    # the search's date window: dates, date-times, months, years or epoch seconds, in order
    ("/v1/agents/alice/messages", {"query": "Ada", "start_date": "yesterday"}, "start_date"),
    ("/v1/agents/alice/messages", {"query": "Ada", "end_date": "2024-13"}, "end_date"),
    ("/v1/agents/alice/messages", {"end_date": "2024-02-30"}, "end_date"),
    ("/v1/agents/alice/messages", {"start_date": "nan"}, "start_date"),
    ("/v1/agents/alice/messages", {"start_date": "1e400"}, "start_date"),
    ("/v1/agents/alice/messages", {"start_date": "2024-02", "end_date": "2024-01"},
     "start_date"),
]


def test_bad_parameters_are_400_naming_them(api, secret):
    for path, params, param in BAD_PARAMETERS:
        response = api.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"]["param"] == param, (params, response.text)
        assert response.json()["error"]["code"] == "invalid_parameter" or param == (
            "conversation")


def test_bad_passage_ids_and_unknown_routes(api, secret):
    error(api.delete("/v1/agents/alice/passages/abc"), 400, "invalid_id", "passage_id")
    error(api.delete("/v1/agents/alice/passages/²"), 400, "invalid_id", "passage_id")
    error(api.delete("/v1/agents/alice/passages/99999"), 404, "not_found")
    error(api.get("/v1/agents/alice/nothing"), 404)
    response = api.http.post("/v1/agents/alice/blocks")  # no such method
    assert response.status_code == 405
    validate_error(response.json())


def test_the_search_takes_a_date_window(api, secret):
    def found(**window: str) -> list[str]:
        response = api.get("/v1/agents/alice/messages", params={"query": "Ada", **window})
        assert response.status_code == 200, response.text
        return [m["content"] for m in response.json()["data"]]

    everything = found()
    assert "My name is Ada" in everything
    now = time.time()
    for window in ({"start_date": "2000-01-01"}, {"start_date": "2000"},
                   {"start_date": "2000-01-01T00:00:00+02:00", "end_date": f"{now + 60:.3f}"},
                   {"end_date": time.strftime("%Y-%m-%d", time.gmtime(now))},
                   {"end_date": time.strftime("%Y-%m", time.gmtime(now))},
                   {"start_date": str(int(now) - 3600), "end_date": ""}):
        assert found(**window) == everything, window
    for window in ({"end_date": "2000-01-01"}, {"end_date": "1999-12"},
                   {"start_date": str(int(now) + 3600)},
                   {"start_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))}):
        assert found(**window) == [], window


# --- the OpenAPI document ----------------------------------------------------------------------
def test_openapi_document_describes_every_route(server):
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises on an invalid schema
    from proxy.api.routes import ENDPOINTS

    served = {(route.path, method) for route in server.app.routes
              if route.path.startswith("/v1/agents") for method in route.methods - {"HEAD"}}
    documented = {(path, method.upper()) for path, ops in document["paths"].items()
                  for method in ops}
    assert served <= documented
    assert len(ENDPOINTS) == len(documented) - 1  # + /openapi.json
    search = document["paths"]["/v1/agents/{agent}/messages"]["get"]
    assert {"query", "roles", "start_date", "end_date", "limit"} <= {
        p["name"] for p in search["parameters"]}
    create = document["paths"]["/v1/agents"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AgentCreate"}
    assert document["components"]["schemas"]["AgentCreate"]["additionalProperties"] is False
