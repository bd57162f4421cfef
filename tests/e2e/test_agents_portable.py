"""Export and import (docs/api.md, "The agent document") through a real server, both backends:
export -> delete -> import gives an agent whose next prompts upstream are byte-identical; an
export moves between SQLite and Postgres; a Letta Agent File imports; conflicts, renames,
replacement and bad documents."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.agents_api_check import AgentsApi
from tests.e2e.test_paging import summarizing_model
from tests.fakes.upstream import prompt_tokens
from tests.store_backends import postgres_database

MODEL = "gpt-4o-mini"
WINDOW = 4096
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "letta_agent.af"
FILLER = ("Let me describe the plan in detail: we sail out at dawn, check the rigging, reef "
          "the main if the wind picks up, and keep a log of every tack and gybe. ") * 4


def chat(server, messages: list[dict], agent: str = "alice",
         conversation: str | None = None) -> dict:
    headers = {"x-agent-id": agent}
    if conversation:
        headers["x-conversation-id"] = conversation
    response = httpx.post(f"{server.base_url}/chat/completions", headers=headers, timeout=60,
                          json={"model": MODEL, "messages": messages})
    assert response.status_code == 200, response.text
    return response.json()


def say(server, text: str, **kw) -> str:
    return chat(server, [{"role": "user", "content": text}], **kw)["choices"][0]["message"][
        "content"]


def build_history(server, api) -> list[dict]:
    """An agent with every kind of state: memory edits by the model and the API, a passage, a
    summary with evicted messages, a chat-UI conversation with an edited (superseded) turn.
    Returns the UI conversation's history as its client sees it."""
    say(server, "My name is Ada")
    say(server, "Remember in archive: the locker code is 4711")
    api.put("/v1/agents/alice/blocks/plans", json={"value": "Sail on Saturday",
                                                   "description": "what is planned"})
    api.put("/v1/agents/alice/blocks/plans", json={"value": "Sail on Sunday"})
    api.post("/v1/agents/alice/blocks/plans/undo")
    for turn in range(12):
        say(server, f"Turn {turn}: {FILLER}")
    ui = [{"role": "user", "content": "hello from the UI"}]
    for text in ("hello from the UI", "what about knots?"):
        if text != ui[0]["content"]:
            ui.append({"role": "user", "content": text})
        reply = chat(server, ui, conversation="ui")["choices"][0]["message"]["content"]
        ui.append({"role": "assistant", "content": reply})
    ui = [*ui[:2], {"role": "user", "content": "what about bowlines?"}]  # an edit
    ui.append({"role": "assistant", "content": chat(server, ui, conversation="ui")[
        "choices"][0]["message"]["content"]})
    return ui


def probe(server, fake_upstream, ui: list[dict]) -> list[bytes]:
    """The raw request bodies memproxy sends upstream for the next turns (every step). The
    fake upstream numbers the tool calls it makes up (call_1, call_2, ...) across its whole
    life; those numbers are its own, not memproxy's, and are blanked."""
    fake_upstream.clear()
    say(server, "What is my name?")
    say(server, "Search archive: locker")
    chat(server, [*ui, {"role": "user", "content": "and reef knots?"}], conversation="ui")
    return sent(fake_upstream)


def sent(fake_upstream) -> list[bytes]:
    return [re.sub(rb'"call_[0-9]+"', b'"call_N"', r.body) for r in fake_upstream.requests]


@pytest.fixture
def windowed(make_proxy, fake_upstream):
    fake_upstream.context_window = WINDOW
    fake_upstream.responder = summarizing_model
    return {"models": {MODEL: {"context_window": WINDOW}}, "upstream": {"max_retries": 0}}


def comparable(document: dict) -> dict:
    """An export without what an import legitimately changes: the export time, revision ids
    and the import's own revisions."""
    out = copy.deepcopy(document)
    out.pop("exported_at")
    out["block_history"] = [{k: v for k, v in r.items() if k != "id"}
                            for r in out["block_history"] if r["source"] != "import"]
    return out


def test_export_delete_import_next_prompts_are_byte_identical(make_proxy, windowed,
                                                               fake_upstream):
    server = make_proxy(windowed)
    api = AgentsApi.connect(server.url)
    ui = build_history(server, api)
    exported = api.get("/v1/agents/alice/export").json()
    default = next(c for c in exported["conversations"] if c["id"] == "default")
    assert default["summary"] and any(not m["in_context"] for m in default["messages"])
    assert any(not m["visible"] for m in default["messages"])
    assert any(m["superseded"] for c in exported["conversations"] for m in c["messages"])
    assert {r["source"] for r in exported["block_history"]} == {
        "tool:core_memory_append", "api", "undo"}
    stats = api.get("/v1/agents/alice").json()["stats"]
    before = probe(server, fake_upstream, ui)
    assert len(before) >= 3 and max(prompt_tokens(json.loads(b)) for b in before) <= WINDOW

    assert api.delete("/v1/agents/alice").json()["deleted"] is True
    imported = api.post("/v1/agents/import", json=exported)
    assert imported.status_code == 201
    assert imported.json()["stats"] == stats
    assert comparable(api.get("/v1/agents/alice/export").json()) == comparable(exported)
    after = probe(server, fake_upstream, ui)
    assert after == before


def test_an_export_moves_between_sqlite_and_postgres(make_proxy, database_url, tmp_path,
                                                     fake_upstream):
    """[sqlite]: from SQLite into a fresh Postgres database; [postgres]: the reverse."""
    source = make_proxy()
    source_api = AgentsApi.connect(source.url)
    say(source, "My name is Ada")
    say(source, "Remember in archive: the locker code is 4711")
    say(source, "Tell me a story about boats", conversation="stories")
    exported = source_api.get("/v1/agents/alice/export").json()
    if database_url.startswith("sqlite"):
        with postgres_database() as other_url:
            _check_moved(make_proxy, other_url, source, exported, fake_upstream)
    else:
        _check_moved(make_proxy, f"sqlite:///{tmp_path}/other.db", source, exported,
                     fake_upstream)


def _check_moved(make_proxy, other_url: str, source, exported: dict, fake_upstream) -> None:
    target = make_proxy({"database": {"url": other_url}})
    target_api = AgentsApi.connect(target.url)
    assert target_api.post("/v1/agents/import", json=exported).status_code == 201
    assert comparable(target_api.get("/v1/agents/alice/export").json()) == comparable(exported)
    prompts = []
    for server in (source, target):
        fake_upstream.clear()
        assert say(server, "What is my name?") == "Your name is Ada."
        assert "4711" in say(server, "Search archive: locker", conversation="stories")
        prompts.append(sent(fake_upstream))
    assert prompts[0] == prompts[1]
    target.stop()


def test_letta_agent_file_import(make_proxy, fake_upstream):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    imported = api.post("/v1/agents/import", json=json.loads(FIXTURE.read_text()))
    assert imported.status_code == 201
    sam = imported.json()
    assert sam["id"] == "sam" and sam["settings"] == {}
    assert [(b["label"], b["value"], b["limit"]) for b in sam["blocks"]] == [
        ("human", "First name: Chad\nLoves sailing.", 2000),
        ("persona", "I am Sam, a curious and kind companion.", 2000)]
    assert sam["stats"] == {"conversations": 1, "messages": 4, "passages": 2}
    rows = api.get("/v1/agents/sam/conversations/default/messages").json()["data"]
    assert [(r["role"], r["visible"], r["in_context"]) for r in rows] == [
        ("user", True, False), ("assistant", False, False), ("tool", False, False),
        ("assistant", True, True), ("user", True, True), ("assistant", True, True)]
    assert rows[0]["content"] == "Hi, I'm Chad and I love sailing."
    assert rows[1]["tool_calls"][0]["function"]["name"] == "core_memory_append"
    assert rows[2]["tool_call_id"] == rows[1]["tool_calls"][0]["id"] == "call-abc1"
    assert rows[3]["content"] == "Nice to meet you, Chad! Sailing sounds wonderful."
    assert rows[5]["content"].startswith("Saturday looks sunny")
    assert rows[0]["created_at"] == 1740823260.0  # 2025-03-01T10:01:00Z
    assert rows[3]["turn_id"] == rows[0]["turn_id"] != rows[4]["turn_id"]
    passages = api.get("/v1/agents/sam/passages").json()["data"]
    assert [(p["text"], p["tags"]) for p in passages] == [
        ("Chad sails on the bay most Saturdays.", []),
        ("Chad's boat is a 1978 Catalina 22 named Windfall.", ["boat"])]
    assert [r["source"] for r in api.get(
        "/v1/agents/sam/blocks/human/history").json()["data"]] == ["import"]

    reply = say(server, "Search archive: boat", agent="sam")
    assert "Windfall" in reply
    sent = fake_upstream.requests[0].json["messages"]
    assert "First name: Chad" in sent[0]["content"]
    texts = [m.get("content") for m in sent[1:]]
    assert "Nice to meet you, Chad! Sailing sounds wonderful." in texts
    assert "Hi, I'm Chad and I love sailing." not in texts  # not in Letta's context window
    assert not any("Letta" in (m.get("content") or "") for m in sent)  # its system prompt


def test_legacy_letta_shape_and_renaming(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    legacy = {
        "agent_type": "memgpt_agent", "name": "old agent", "system": "ignored",
        "core_memory": [{"label": "human", "value": "Name: Lee", "limit": 5,
                         "description": None, "created_at": "2024-01-01T00:00:00Z",
                         "updated_at": "2024-01-02T00:00:00Z", "is_template": False,
                         "template_name": None}],
        "in_context_message_indices": [1, 2],
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "sys"}], "tool_calls": [],
             "tool_call_id": None, "tool_returns": [], "created_at": "2024-01-01T00:00:00Z"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}], "tool_calls": [],
             "tool_call_id": None, "tool_returns": [], "created_at": "2024-01-01T00:00:01Z"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi Lee"}],
             "tool_calls": [], "tool_call_id": None, "tool_returns": [],
             "created_at": "2024-01-01T00:00:02Z"}],
        "llm_config": {"model": "gpt-4"}, "embedding_config": {}, "tools": [], "tags": [],
        "tool_rules": [], "tool_exec_environment_variables": [], "version": "0.6.0"}
    bad_name = api.post("/v1/agents/import", json=legacy)
    assert (bad_name.status_code, bad_name.json()["error"]["param"]) == (400, "id")
    created = api.post("/v1/agents/import", params={"id": "lee"}, json=legacy).json()
    assert [(b["label"], b["value"], b["limit"], b["description"]) for b in created["blocks"]] == [
        ("human", "Name: Lee", 9, "")]  # the limit grows to fit the value
    assert created["blocks"][0]["updated_at"] == 1704153600.0
    rows = api.get("/v1/agents/lee/conversations/default/messages").json()["data"]
    assert [(r["role"], r["content"], r["in_context"]) for r in rows] == [
        ("user", "hello", True), ("assistant", "hi Lee", True)]
    assert say(server, "What is my name?", agent="lee") == "Your name is Lee."


def test_conflicts_copies_and_replacement(make_proxy, fake_upstream):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    say(server, "My name is Ada")
    exported = api.get("/v1/agents/alice/export").json()
    conflict = api.post("/v1/agents/import", json=exported)
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "conflict")

    copy_ = api.post("/v1/agents/import", params={"id": "alice-copy"}, json=exported)
    assert copy_.status_code == 201 and copy_.json()["id"] == "alice-copy"
    say(server, "My name is Grace", agent="alice-copy")
    assert say(server, "What is my name?", agent="alice-copy") == "Your name is Grace."
    assert say(server, "What is my name?") == "Your name is Ada."
    turns = {m["turn_id"] for c in api.get("/v1/agents/alice-copy/export").json()[
        "conversations"] for m in c["messages"]}
    originals = {m["turn_id"] for c in exported["conversations"] for m in c["messages"]}
    assert not turns & originals  # turn ids are unique in the database: the copy's renamed

    replaced = api.post("/v1/agents/import", params={"replace": "true", "id": "alice"},
                        json=api.get("/v1/agents/alice-copy/export").json())
    assert replaced.status_code == 201
    assert say(server, "What is my name?") == "Your name is Grace."
    history = api.get("/v1/agents/alice/blocks/human/history").json()["data"]
    assert (history[0]["source"], history[0]["old_value"]) == ("import", "Name: Ada")


def test_import_as_a_tenant_and_as_an_admin(make_proxy):
    server = make_proxy({"auth": {"keys": {"key-a": "tenant-a", "key-b": "tenant-b"},
                                  "admin_keys": ["admin"]}})
    a = AgentsApi.connect(server.url, "key-a")
    a.post("/v1/agents", json={"id": "alice", "blocks": [{"label": "human", "value": "A"}]})
    exported = a.get("/v1/agents/alice/export").json()
    b = a.as_key("key-b")
    assert b.post("/v1/agents/import", params={"tenant": "tenant-a"},
                  json=exported).json()["tenant"] == "tenant-b"  # ?tenant= ignored
    admin = a.as_key("admin")
    made = admin.post("/v1/agents/import", params={"tenant": "tenant-c"}, json=exported)
    assert made.json()["tenant"] == "tenant-c"
    assert admin.post("/v1/agents/import", params={"tenant": "tenant-a"},
                      json=exported).status_code == 409


def _document(**changes) -> dict:
    doc = {"format": "memproxy.agent", "version": 1, "exported_at": 1.0,
           "agent": {"id": "doc", "created_at": 1.0, "settings": {}},
           "blocks": [{"label": "human", "value": "x"}],
           "conversations": [{"id": "default", "created_at": 1.0, "messages": [
               {"seq": 1, "message": {"role": "user", "content": "hi"}, "turn_id": "t1",
                "created_at": 1.0}]}]}
    for path, value in changes.items():
        target = doc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if value is ...:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return doc


BAD_DOCUMENTS = [
    ({}, "format", "invalid_document"),
    ({"format": "other.agent"}, "format", "invalid_document"),
    (_document(version=2), "version", "invalid_body"),
    (_document(agent=...), "agent", "invalid_body"),
    (_document(**{"agent.id": "../x"}), "id", "invalid_id"),
    (_document(extra=1), "extra", "invalid_body"),
    (_document(**{"blocks.0.label": "a b"}), "blocks[0].label", "invalid_id"),
    (_document(**{"blocks.0.limit": 0}), "blocks[0].limit", "invalid_body"),
    (_document(**{"blocks.0.limit": 1, "blocks.0.value": "xy"}), "blocks[0].value",
     "block_too_long"),
    (_document(**{"conversations.0.id": "a/b"}), "conversations[0].id", "invalid_id"),
    (_document(**{"conversations.0.messages.0.seq": 0}), "conversations[0].messages[0].seq",
     "invalid_body"),
    (_document(**{"conversations.0.messages.0.message": {"content": "no role"}}),
     "conversations[0].messages[0].message.role", "invalid_body"),
    (_document(**{"conversations.0.messages.0.colour": "red"}),
     "conversations[0].messages[0].colour", "invalid_body"),
    (_document(**{"conversations.0.messages.0.turn_id": "t\x00"}),
     "conversations[0].messages[0].turn_id", "invalid_body"),
    (_document(**{"conversations.0.head_hash": "\x00"}), "conversations[0].head_hash",
     "invalid_body"),
    ({"agents": [{"name": "a"}, {"name": "b"}], "blocks": []}, "agents", "invalid_document"),
    ({"agents": [{"name": "a", "block_ids": ["b0"]}], "blocks": [{"id": "b0", "label": 3}]},
     "blocks[0]", "invalid_document"),
]


def test_bad_documents_are_400_and_store_nothing(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    for document, param, code in BAD_DOCUMENTS:
        response = api.post("/v1/agents/import", json=document)
        assert response.status_code == 400, (document, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code), (document, error)
    assert api.get("/v1/agents").json()["data"] == []


def test_duplicates_inside_a_document_are_400(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    doc = _document()
    doc["conversations"][0]["messages"].append(dict(doc["conversations"][0]["messages"][0]))
    twice = api.post("/v1/agents/import", json=doc).json()["error"]
    assert (twice["param"], twice["code"]) == ("conversations[0].messages[1].seq",
                                               "duplicate_seq")
    doc = _document()
    doc["conversations"].append(dict(doc["conversations"][0]))
    assert api.post("/v1/agents/import", json=doc).json()["error"]["param"] == (
        "conversations[1].id")
    doc = _document()
    doc["blocks"].append({"label": "human"})
    assert api.post("/v1/agents/import", json=doc).json()["error"]["code"] == "duplicate_label"
    doc = _document()
    doc["conversations"].append({"id": "other", "created_at": 1.0, "messages": [
        {"seq": 1, "message": {"role": "user", "content": "x"}, "turn_id": "t1",
         "created_at": 1.0}]})
    same_turn = api.post("/v1/agents/import", json=doc).json()["error"]
    assert same_turn["param"] == "conversations[1].turns[0].turn_id"
    assert api.get("/v1/agents").json()["data"] == []
    # a minimal document (no turns, no history, no passages) imports and chats
    assert api.post("/v1/agents/import", json=_document()).status_code == 201
    assert [r["content"] for r in api.get(
        "/v1/agents/doc/conversations/default/messages").json()["data"]] == ["hi"]
