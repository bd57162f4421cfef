"""Forgetting on a real server, both backends (docs/forgetting.md): deleting a conversation,
forgetting by query and by id, the retention job. After each, the forgotten words are in no
row of any table (every text and JSON column read back with SQL), no search and no export
finds them, no vector is left, the next prompt does not carry them, and the audit log has
counts but no content."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest

from proxy.store import open_store
from tests.agents_api_check import AgentsApi
from tests.e2e.test_hybrid_search import DIMENSIONS
from tests.fakes.embeddings import concept_embed
from tests.store_backends import run_with_store

MODEL = "gpt-4o-mini"
AGENT = "forgetful"
SECRET = "Zorroquux"


def settings(**extra: Any) -> dict[str, dict[str, Any]]:
    return {"embeddings": {"enabled": True, "model": "fake-embed", "dimensions": DIMENSIONS,
                           "api_key": "sk-embed"}, **extra}


def say(client: Any, text: str, conversation: str) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}],
        extra_headers={"X-Agent-Id": AGENT, "X-Conversation-Id": conversation})
    return reply.choices[0].message.content


def rows_holding(url: str, needle: str) -> list[str]:
    """`table.column` of every row of every table whose text or JSON holds `needle`
    (case-insensitive). SQLite's FTS5 shadow tables hold tokens, not text, and are skipped."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        found = []
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%fts%'")]
        for table in tables:
            for col in db.execute(f"PRAGMA table_xinfo({table})").fetchall():
                hit = db.execute(f"SELECT count(*) FROM {table} WHERE CAST({col[1]} AS TEXT)"
                                 " LIKE ?", (f"%{needle}%",)).fetchone()[0]
                if hit:
                    found.append(f"{table}.{col[1]}")
        db.close()
        return found

    async def scan() -> list[str]:
        import asyncpg
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            cols = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type IN ('text', 'json', 'jsonb',"
                " 'tsvector')")
            found = []
            for table, col in cols:
                if await conn.fetchval(f'SELECT count(*) FROM "{table}" WHERE "{col}"::text'
                                       " ILIKE $1", f"%{needle}%"):
                    found.append(f"{table}.{col}")
            return found
        finally:
            await conn.close()

    return asyncio.run(scan())


def store_call(url: str, work: Any) -> Any:
    async def body(store: Any) -> Any:
        agent = await store.get_agent("default", AGENT)
        return await work(store, agent.pk)

    return run_with_store(open_store(url), body)


async def vectors(store: Any, agent_pk: int) -> dict[str, int]:
    return {kind: (await store.vector_state(kind, agent_pk)).rows
            for kind in ("passage", "message")}


def wait_until(check: Any, timeout_s: float = 60.0) -> None:
    """Poll until `check()` holds (the deadline only bounds a broken run)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def nothing_of(api: AgentsApi, url: str, needle: str) -> None:
    """The word is gone: from every table, from search (hybrid: nearest vectors may still
    answer, none holding it), from the export."""
    assert rows_holding(url, needle) == []
    hits = api.get(f"/v1/agents/{AGENT}/messages", params={"query": needle}).json()["data"]
    assert needle.lower() not in json.dumps(hits).lower()
    found = api.get(f"/v1/agents/{AGENT}/passages", params={"query": needle}).json()["data"]
    assert needle.lower() not in json.dumps(found).lower()
    assert needle.lower() not in json.dumps(api.get(f"/v1/agents/{AGENT}/export").json()).lower()


@pytest.fixture
def setup(make_proxy, fake_upstream):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(settings())
    return proxy, proxy.client(), AgentsApi.connect(proxy.url)


def test_delete_conversation_removes_everything_of_it(setup, database_url):
    proxy, client, api = setup
    say(client, f"My cat is called {SECRET} and likes tuna", "secret")
    say(client, f"Remember in archive: the vet of {SECRET.lower()} is far", "secret")
    say(client, "The weather is nice today", "other")
    wait_until(lambda: store_call(database_url, vectors)["message"] >= 6)
    deleted = api.delete(f"/v1/agents/{AGENT}/conversations/secret")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["removed"]["conversations"] == 1 and body["removed"]["messages"] >= 4
    # the passage the model archived is archival memory, not the conversation: forget it
    assert api.post(f"/v1/agents/{AGENT}/forget",
                    json={"query": SECRET}).json()["removed"]["passages"] == 1
    nothing_of(api, database_url, SECRET)
    assert store_call(database_url, vectors) == {"passage": 0, "message": 2}
    assert [c["id"] for c in api.get(f"/v1/agents/{AGENT}/conversations").json()["data"]] == [
        "other"]
    again = api.delete(f"/v1/agents/{AGENT}/conversations/secret")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert api.delete("/v1/agents/nobody/conversations/secret").status_code == 404
    log = api.get("/v1/forget-log").json()["data"]
    assert [e["kind"] for e in log] == ["forget", "delete_conversation"]
    assert SECRET.lower() not in json.dumps(log).lower()
    # the conversation id is free again: a new turn starts from nothing
    assert "saw 1 user messages" in say(client, "hello again", "secret")


def test_forget_by_query_and_by_id(setup, database_url, fake_upstream):
    proxy, client, api = setup
    say(client, f"My dog {SECRET} barks at night", "c1")
    say(client, "Dogs bark, cats purr", "c1")
    say(client, f"Remember in archive: {SECRET} was born in May", "c2")
    say(client, "I like green tea", "c2")
    api.post(f"/v1/agents/{AGENT}/passages", json={"text": "Green tea is from Japan"})
    wait_until(lambda: store_call(database_url, vectors)["passage"] == 2)
    result = api.post(f"/v1/agents/{AGENT}/forget", json={"query": f"{SECRET.lower()} dog"})
    assert result.status_code == 200, result.text
    # the first message has both words (and its echo); the archive turn lacks "dog"
    assert result.json()["removed"] == {"conversations": 0, "messages": 2, "passages": 0,
                                        "responses": 0, "blocks": 0}
    result = api.post(f"/v1/agents/{AGENT}/forget", json={"query": SECRET})
    assert result.json()["removed"]["passages"] == 1
    assert result.json()["removed"]["messages"] >= 2  # the archive turn and its steps
    nothing_of(api, database_url, SECRET)
    assert "Dogs bark" in json.dumps(api.get(f"/v1/agents/{AGENT}/export").json())
    # the next prompt of c1 holds the placeholder, not the words
    say(client, "what did I say?", "c1")
    sent = json.dumps(fake_upstream.last.json["messages"])
    assert SECRET not in sent and "[forgotten]" in sent
    # by id: the tea messages of c2 (the user's and its echo)
    page = api.get(f"/v1/agents/{AGENT}/conversations/c2/messages").json()["data"]
    tea = [m["seq"] for m in page if "green tea" in json.dumps(m).lower()]
    passages = api.get(f"/v1/agents/{AGENT}/passages").json()["data"]
    result = api.post(f"/v1/agents/{AGENT}/forget", json={
        "messages": [{"conversation_id": "c2", "seq": seq} for seq in tea],
        "passages": [passages[0]["id"]]})
    assert len(tea) == 2 and result.json()["removed"]["messages"] == 2
    assert result.json()["removed"]["passages"] == 1
    assert "green tea" not in json.dumps(api.get(f"/v1/agents/{AGENT}/export").json()).lower()
    assert store_call(database_url, vectors)["passage"] == 0
    log = api.get("/v1/forget-log", params={"agent_id": AGENT}).json()["data"]
    assert len(log) == 3 and all(e["kind"] == "forget" for e in log)


def test_forget_rejects_bad_bodies(setup):
    proxy, client, api = setup
    say(client, "hello", "c1")
    for body, code in (({}, "invalid_parameter"), ({"query": "?!"}, "invalid_parameter"),
                       ({"query": 3}, None), ({"messages": [{"conversation_id": "c1"}]}, None),
                       ({"what": 1}, None), ({"passages": [2**70]}, None),
                       ({"passages": [0]}, None),
                       ({"messages": [{"conversation_id": "c1", "seq": 2**40}]}, None),
                       ({"messages": [{"conversation_id": "c\u0000", "seq": 1}]}, None),
                       ({"messages": [{"conversation_id": "a b/c", "seq": 1}]}, None),
                       ({"query": "dog\u0000"}, "invalid_parameter")):
        response = api.post(f"/v1/agents/{AGENT}/forget", json=body)
        assert response.status_code == 400, (body, response.text)
        if code:
            assert response.json()["error"]["code"] == code
    assert api.post("/v1/agents/nobody/forget", json={"query": "x"}).status_code == 404


def test_retention_forgets_old_messages_and_responses(make_proxy, fake_upstream, database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(settings())
    client, api = proxy.client(), AgentsApi.connect(proxy.url)
    say(client, f"Old news about {SECRET}", "c1")
    stored = proxy.client(base_url=f"{proxy.url}/agents/{AGENT}/v1").responses.create(
        model=MODEL, input=f"Responses API news about {SECRET}")
    assert proxy.http().get(f"/v1/responses/{stored.id}").status_code == 200
    proxy.stop()
    # a second server whose retention keeps messages 0.5 s, checking every 0.1 s
    later = make_proxy(settings(retention={"messages_days": 0.5 / 86400, "interval_s": 0.1,
                                           "responses_days": 0.5 / 86400}))
    api = AgentsApi.connect(later.url)
    wait_until(lambda: rows_holding(database_url, SECRET) == [])
    nothing_of(api, database_url, SECRET)
    assert later.http().get(f"/v1/responses/{stored.id}").status_code == 404
    log = api.get("/v1/forget-log").json()["data"]
    assert log and log[-1]["kind"] == "retention" and log[-1]["actor"] == "retention"
    # an agent's own setting overrides: 0 keeps forever
    api.patch(f"/v1/agents/{AGENT}", json={"settings": {"retention_messages_days": 0}})
    say(later.client(), f"New news about {SECRET}", "c2")
    time.sleep(1.0)  # several passes of the job; nothing asserted on timing
    assert rows_holding(database_url, SECRET) != []


def test_purge_erases_the_bytes(setup, database_url):
    """After a forget and a purge, not even the index terms are left in the database files
    (SQLite: every file beside it read raw; Postgres: the tables are VACUUMed, checked by SQL
    above). Purging needs an admin key where keys are configured (tests/e2e/test_quotas.py's
    server has none: the open server's caller is an admin)."""
    proxy, client, api = setup
    say(client, f"The password hint is {SECRET}", "c1")
    api.post(f"/v1/agents/{AGENT}/passages", json={"text": f"{SECRET} hint"})
    assert api.post(f"/v1/agents/{AGENT}/forget", json={"query": SECRET}).json()["removed"][
        "messages"] == 2
    purged = api.post("/v1/purge")
    assert purged.status_code == 200 and purged.json() == {"object": "purge", "purged": True}
    assert rows_holding(database_url, SECRET) == []
    if database_url.startswith("sqlite"):
        import glob
        for path in glob.glob(database_url.removeprefix("sqlite:///") + "*"):
            with open(path, "rb") as f:
                data = f.read().lower()
            assert SECRET.lower().encode() not in data, path


def test_purge_needs_an_admin_key(make_proxy):
    proxy = make_proxy({"auth": {"keys": {"key-a": "tenant-a"}, "admin_keys": ["admin-key"]}})
    tenant = AgentsApi.connect(proxy.url, "key-a").post("/v1/purge")
    assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "admin_required"
    assert AgentsApi.connect(proxy.url, "admin-key").post("/v1/purge").status_code == 200


def test_forget_removes_what_memory_blocks_wrote_down(setup, database_url, fake_upstream):
    """"My name is X" makes the model append "Name: X" to the human block: forgetting X removes
    that line from the block and from the block's history too (undo cannot bring it back)."""
    proxy, client, api = setup
    say(client, f"My name is {SECRET}", "c1")
    api.put(f"/v1/agents/{AGENT}/blocks/notes", json={"value": f"likes tea\n{SECRET} is tall"})
    human = api.get(f"/v1/agents/{AGENT}/blocks/human").json()["value"]
    assert SECRET in human
    removed = api.post(f"/v1/agents/{AGENT}/forget", json={"query": SECRET}).json()["removed"]
    assert removed["blocks"] == 2 and removed["messages"] >= 2
    assert api.get(f"/v1/agents/{AGENT}/blocks/notes").json()["value"] == "likes tea"
    assert SECRET not in api.get(f"/v1/agents/{AGENT}/blocks/human").json()["value"]
    nothing_of(api, database_url, SECRET)
    say(client, "What is my name?", "c1")
    assert SECRET not in json.dumps(fake_upstream.last.json)


def test_forget_reaches_superseded_messages(setup, database_url):
    """A chat UI that edits its first message supersedes the old branch: search no longer
    shows it, the export and the database still hold it, and forgetting must reach it."""
    proxy, client, api = setup
    headers = {"X-Agent-Id": AGENT, "X-Conversation-Id": "edited"}
    client.chat.completions.create(model=MODEL, extra_headers=headers, messages=[
        {"role": "user", "content": f"Tell me about {SECRET}"}])
    client.chat.completions.create(model=MODEL, extra_headers=headers, messages=[
        {"role": "user", "content": "Tell me about cats"}])
    assert SECRET in json.dumps(api.get(f"/v1/agents/{AGENT}/export").json())
    removed = api.post(f"/v1/agents/{AGENT}/forget", json={"query": SECRET}).json()["removed"]
    assert removed["messages"] == 2
    nothing_of(api, database_url, SECRET)
