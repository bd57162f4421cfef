"""The agents REST API steering memory (docs/api.md), on both backends: block edits and their
history (a model's memory-tool edit through a real chat turn, an API write, an undo that the
next prompt shows), transcripts and their search, archival passages."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.agents_api_check import AgentsApi
from tests.fakes import Reply

MODEL = "gpt-4o-mini"


@pytest.fixture
def server(make_proxy):
    return make_proxy()


@pytest.fixture
def api(server):
    return AgentsApi.connect(server.url)


def chat(server, text: str, agent: str = "ada", conversation: str | None = None,
         messages: list[dict] | None = None) -> httpx.Response:
    headers = {"x-agent-id": agent}
    if conversation:
        headers["x-conversation-id"] = conversation
    response = httpx.post(f"{server.base_url}/chat/completions", headers=headers, timeout=30,
                          json={"model": MODEL, "messages": messages or [
                              {"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response


def system_prompt(fake_upstream) -> str:
    return fake_upstream.last.json["messages"][0]["content"]


def test_memory_tool_edits_api_writes_and_undo_are_history(server, api, fake_upstream):
    told = chat(server, "My name is Ada")
    turn_id = told.headers["x-memproxy-turn-id"]
    [edit] = api.get("/v1/agents/ada/blocks/human/history").json()["data"]
    assert (edit["source"], edit["old_value"], edit["new_value"], edit["turn_id"]) == (
        "tool:core_memory_append", "", "Name: Ada", turn_id)
    chat(server, "Replace memory: Name: Ada => Name: Ada Lovelace")
    replaced = api.get("/v1/agents/ada/blocks/human/history").json()["data"][0]
    assert (replaced["source"], replaced["old_value"], replaced["new_value"]) == (
        "tool:core_memory_replace", "Name: Ada", "Name: Ada Lovelace")
    assert replaced["turn_id"] != turn_id and replaced["id"] > edit["id"]

    # an operator's write: recorded as "api", and the next prompt carries it
    put = api.put("/v1/agents/ada/blocks/human", json={"value": "Name: Grace"}).json()
    assert (put["value"], put["chars"], put["limit"]) == ("Name: Grace", 11, 5000)
    assert put["description"].startswith("What you know about the user")  # kept
    history = api.get("/v1/agents/ada/blocks/human/history").json()["data"]
    assert [(r["source"], r["new_value"]) for r in history] == [
        ("api", "Name: Grace"), ("tool:core_memory_replace", "Name: Ada Lovelace"),
        ("tool:core_memory_append", "Name: Ada")]
    assert history[0]["turn_id"] is None
    assert chat(server, "What is my name?").json()["choices"][0]["message"]["content"] == (
        "Your name is Grace.")

    # undo the newest revision: back to what the model wrote; the next prompt shows it
    undone = api.post("/v1/agents/ada/blocks/human/undo").json()
    assert undone["value"] == "Name: Ada Lovelace"
    newest = api.get("/v1/agents/ada/blocks/human/history", params={"limit": 1}).json()
    assert newest["has_more"] is True
    assert [(r["source"], r["old_value"], r["new_value"]) for r in newest["data"]] == [
        ("undo", "Name: Grace", "Name: Ada Lovelace")]
    reply = chat(server, "What is my name?").json()["choices"][0]["message"]["content"]
    assert reply == "Your name is Ada Lovelace."
    assert "Name: Ada Lovelace" in system_prompt(fake_upstream)
    assert "Name: Grace" not in system_prompt(fake_upstream)

    # undo a given revision: the value before the model's first edit (empty)
    restored = api.post("/v1/agents/ada/blocks/human/undo", json={"revision": edit["id"]})
    assert restored.json()["value"] == ""
    assert chat(server, "What is my name?").json()["choices"][0]["message"]["content"] == (
        "I don't know your name.")
    assert "Name: Ada" not in system_prompt(fake_upstream)


def test_undo_errors(server, api):
    chat(server, "My name is Ada")
    [edit] = api.get("/v1/agents/ada/blocks/human/history").json()["data"]
    missing = api.post("/v1/agents/ada/blocks/human/undo", json={"revision": edit["id"] + 99})
    assert (missing.status_code, missing.json()["error"]["param"]) == (404, "revision")
    other = api.post("/v1/agents/ada/blocks/persona/undo", json={"revision": edit["id"]})
    assert other.status_code == 404  # a revision of another block
    assert api.post("/v1/agents/ada/blocks/persona/undo").status_code == 404  # no history
    assert api.post("/v1/agents/ada/blocks/nope/undo").status_code == 404
    assert api.get("/v1/agents/ada/blocks/nope/history").status_code == 404
    # the value to restore is over the (since lowered) limit: 400, nothing changes
    api.put("/v1/agents/ada/blocks/human", json={"value": "", "limit": 3})
    too_long = api.post("/v1/agents/ada/blocks/human/undo", json={"revision": edit["id"] + 1})
    assert (too_long.status_code, too_long.json()["error"]["code"]) == (400, "block_too_long")
    assert api.get("/v1/agents/ada/blocks/human").json()["value"] == ""


def test_custom_blocks_reach_the_prompt_and_read_only_binds_the_model(server, api,
                                                                       fake_upstream):
    api.post("/v1/agents", json={"id": "ada"})
    made = api.put("/v1/agents/ada/blocks/rules", json={
        "value": "Never reveal the code.", "description": "house rules", "limit": 100,
        "read_only": True})
    assert made.json() == {"object": "block", "label": "rules", "value": "Never reveal the code.",
                           "description": "house rules", "limit": 100, "read_only": True,
                           "chars": 22, "updated_at": made.json()["updated_at"]}
    assert api.get("/v1/agents/ada/blocks/rules").json() == made.json()
    assert [b["label"] for b in api.get("/v1/agents/ada/blocks").json()["data"]] == [
        "persona", "human", "rules"]
    chat(server, "hello")
    prompt = system_prompt(fake_upstream)
    assert "<rules>" in prompt and "Never reveal the code." in prompt and "read_only=true" in prompt
    fake_upstream.push(Reply(tool_calls=[("core_memory_append",
                                          {"label": "rules", "content": "Reveal it."})]))
    chat(server, "change the rules")
    assert api.get("/v1/agents/ada/blocks/rules").json()["value"] == "Never reveal the code."
    assert [r["source"] for r in api.get(
        "/v1/agents/ada/blocks/rules/history").json()["data"]] == ["api"]

    deleted = api.delete("/v1/agents/ada/blocks/rules").json()
    assert deleted == {"object": "block.deleted", "label": "rules", "deleted": True}
    assert api.get("/v1/agents/ada/blocks/rules").status_code == 404
    assert api.delete("/v1/agents/ada/blocks/rules").status_code == 404
    # the deleted block's history stays readable
    assert [(r["old_value"], r["new_value"]) for r in api.get(
        "/v1/agents/ada/blocks/rules/history").json()["data"]][0] == (
        "Never reveal the code.", "")
    chat(server, "hello again")
    assert "<rules>" not in system_prompt(fake_upstream)


def test_transcripts_pages_flags_and_search(server, api):
    chat(server, "My name is Ada", conversation="first")
    for i in range(3):
        chat(server, f"tell me about topic {i} and kites", conversation="first")
    chat(server, "unrelated weather chat", conversation="second")
    conversations = api.get("/v1/agents/ada/conversations").json()["data"]
    assert [(c["id"], c["messages"]) for c in conversations] == [("second", 2), ("first", 8)]
    assert conversations[0]["last_message_at"] >= conversations[1]["last_message_at"]

    everything = api.get("/v1/agents/ada/conversations/first/messages").json()
    rows = everything["data"]
    assert (everything["has_more"], everything["next_after"]) == (False, None)
    assert [r["seq"] for r in rows] == list(range(1, 11))
    # the memory edit of the first turn: an internal step the client never saw
    assert [(r["role"], r["visible"]) for r in rows[:4]] == [
        ("user", True), ("assistant", False), ("tool", False), ("assistant", True)]
    assert rows[1]["tool_calls"][0]["function"]["name"] == "core_memory_append"
    assert rows[2]["tool_call_id"] == rows[1]["tool_calls"][0]["id"]
    assert all(r["in_context"] and not r["superseded"] and r["turn_id"] for r in rows)
    assert "score" not in rows[0] and "conversation_id" not in rows[0]

    page = api.get("/v1/agents/ada/conversations/first/messages",
                   params={"after": 2, "limit": 3}).json()
    assert ([r["seq"] for r in page["data"]], page["has_more"], page["next_after"]) == (
        [3, 4, 5], True, 5)
    hits = api.get("/v1/agents/ada/conversations/first/messages",
                   params={"query": "kites topic"}).json()
    assert {r["seq"] for r in hits["data"]} >= {5, 7, 9}
    scores = [r["score"] for r in hits["data"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert hits["next_after"] is None
    assert api.get("/v1/agents/ada/conversations/second/messages",
                   params={"query": "kites"}).json()["data"] == []
    assert api.get("/v1/agents/ada/conversations/nope/messages").status_code == 404

    found = api.get("/v1/agents/ada/messages", params={"query": "kites"}).json()["data"]
    assert {r["conversation_id"] for r in found} == {"first"} and len(found) >= 3
    users = api.get("/v1/agents/ada/messages",
                    params={"query": "kites", "roles": "user", "limit": 2}).json()
    assert [r["role"] for r in users["data"]] == ["user", "user"] and users["has_more"] is True
    newest = api.get("/v1/agents/ada/messages", params={"limit": 1}).json()["data"]
    assert (newest[0]["conversation_id"], newest[0]["score"]) == ("second", 0.0)


def test_superseded_messages_are_shown_on_request(server, api):
    history = [{"role": "user", "content": "hello there"}]
    for text in ("hello there", "second question"):
        if text != "hello there":
            history.append({"role": "user", "content": text})
        reply = chat(server, "", conversation="ui", messages=history).json()
        history.append({"role": "assistant",
                        "content": reply["choices"][0]["message"]["content"]})
    # the user edits the second question: the chat UI resends the history with it changed
    chat(server, "", conversation="ui", messages=[*history[:2], {
        "role": "user", "content": "second question, edited"}])
    shown = api.get("/v1/agents/ada/conversations/ui/messages").json()["data"]
    assert [r["content"] for r in shown if r["role"] == "user"] == [
        "hello there", "second question, edited"]
    everything = api.get("/v1/agents/ada/conversations/ui/messages",
                         params={"include_superseded": "true"}).json()["data"]
    assert [(r["content"], r["superseded"]) for r in everything if r["role"] == "user"] == [
        ("hello there", False), ("second question", True), ("second question, edited", False)]
    searched = api.get("/v1/agents/ada/conversations/ui/messages", params={
        "query": "second question", "include_superseded": "true"}).json()["data"]
    assert {r["superseded"] for r in searched} == {True, False}
    assert {r["superseded"] for r in api.get("/v1/agents/ada/conversations/ui/messages", params={
        "query": "second question"}).json()["data"]} == {False}


def test_passages_add_list_search_delete(server, api, fake_upstream):
    api.post("/v1/agents", json={"id": "ada"})
    made = api.post("/v1/agents/ada/passages", json={"text": "The locker code is 4711",
                                                     "tags": ["codes", "gym"]})
    assert made.status_code == 201
    first = made.json()
    assert (first["object"], first["text"], first["tags"]) == ("passage",
                                                               "The locker code is 4711",
                                                               ["codes", "gym"])
    api.post("/v1/agents/ada/passages", json={"text": "Bike lock code 1234", "tags": ["codes"]})
    api.post("/v1/agents/ada/passages", json={"text": "Likes green tea"})
    listed = api.get("/v1/agents/ada/passages").json()
    assert [p["text"] for p in listed["data"]] == ["Likes green tea", "Bike lock code 1234",
                                                   "The locker code is 4711"]
    assert "score" not in listed["data"][0]
    page = api.get("/v1/agents/ada/passages", params={"limit": 1, "offset": 1}).json()
    assert ([p["text"] for p in page["data"]], page["has_more"]) == (["Bike lock code 1234"],
                                                                     True)
    assert [p["text"] for p in api.get("/v1/agents/ada/passages", params={
        "tags": "codes,gym"}).json()["data"]] == ["The locker code is 4711"]
    ranked = api.get("/v1/agents/ada/passages", params={"query": "locker code"}).json()["data"]
    assert ranked[0]["text"] == "The locker code is 4711" and ranked[0]["score"] > 0
    assert [p["text"] for p in api.get("/v1/agents/ada/passages", params={
        "query": "code", "tags": "gym"}).json()["data"]] == ["The locker code is 4711"]
    # the model finds what the API stored
    found = chat(server, "Search archive: locker").json()["choices"][0]["message"]["content"]
    assert "4711" in found
    assert api.get("/v1/agents/ada").json()["stats"]["passages"] == 3

    gone = api.delete(f"/v1/agents/ada/passages/{first['id']}").json()
    assert gone == {"object": "passage.deleted", "id": first["id"], "deleted": True}
    assert api.delete(f"/v1/agents/ada/passages/{first['id']}").status_code == 404
    assert "4711" not in json.dumps(api.get("/v1/agents/ada/passages").json())


def test_context_report_through_the_api(server, api):
    chat(server, "My name is Ada", conversation="c1")
    report = api.get("/v1/agents/ada/context", params={"conversation": "c1"}).json()
    assert report["conversation_id"] == "c1" and report["messages_in_context"] == 4
    assert report["tokens"]["blocks"] > 0 and report["model"] == MODEL
    assert api.get("/v1/agents/ada/context", params={"conversation": "nope"}).status_code == 404
    assert api.get("/v1/agents/nobody/context").status_code == 404
