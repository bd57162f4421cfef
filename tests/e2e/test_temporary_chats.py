"""Temporary chats through a real memproxy and the openai SDK, on both backends
(docs/temporary-chats.md; issue 15, item 4: Open WebUI's temporary chats were stored and
`conversation_search` found them from another chat).

A temporary chat (`temporary:<id>`, `local:<id>`, or `X-Memory: ephemeral`) is answered with the
agent's memory read-only: its blocks in the prompt, the searches working, no edit tool offered;
and nothing of it is stored or found later, by the store, the agents REST API, hybrid search's
embeddings or another chat's `conversation_search`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from proxy.store import open_store
from tests.store_backends import run_with_store

MODEL = "gpt-4o-mini"
AGENT = "ada"
EDIT_TOOLS = {"core_memory_append", "core_memory_replace", "archival_memory_insert"}
SEARCH_TOOLS = {"conversation_search", "archival_memory_search"}


def chat(client: Any, chat_id: str, messages: list[dict], **kw: Any):
    """One request as Open WebUI sends it (its user and chat id headers), with the raw
    response so that memproxy's headers can be read."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages,
        extra_headers={"X-OpenWebUI-User-Id": AGENT, "X-OpenWebUI-Chat-Id": chat_id}, **kw)
    return raw, raw.parse()


def say(client: Any, chat_id: str, text: str) -> str:
    return chat(client, chat_id, [{"role": "user", "content": text}])[1].choices[0] \
        .message.content


def offered(body: dict) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or []}


def system_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


def snapshot(proxy, agent: str = AGENT) -> dict[str, Any] | None:
    """Everything the agents REST API shows of an agent, or None if it does not exist."""
    with proxy.http() as api:
        found = api.get(f"/v1/agents/{agent}")
        if found.status_code == 404:
            return None
        conversations = api.get(f"/v1/agents/{agent}/conversations").json()["data"]
        return {
            "agent": found.json(),
            "conversations": conversations,
            "messages": {c["id"]: api.get(
                f"/v1/agents/{agent}/conversations/{c['id']}/messages",
                params={"include_superseded": "true", "limit": 1000}).json()["data"]
                for c in conversations},
            "passages": api.get(f"/v1/agents/{agent}/passages").json()["data"],
            "history": {b["label"]: api.get(
                f"/v1/agents/{agent}/blocks/{b['label']}/history").json()["data"]
                for b in found.json()["blocks"]},
        }


def stored_conversation(proxy, agent: str, conversation: str):
    async def work(store):
        found = await store.get_agent("default", agent)
        return None if found is None else await store.get_conversation(found.pk, conversation)

    return run_with_store(open_store(proxy.settings.database.url), work)


def embedded_texts(fake_upstream) -> list[str]:
    texts: list[str] = []
    for request in fake_upstream.all_requests:
        if request.path.endswith("/embeddings"):
            given = request.json["input"]
            texts += [given] if isinstance(given, str) else given
    return texts


def wait_until_embedded(fake_upstream, text: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in t for t in embedded_texts(fake_upstream)):
        assert time.monotonic() < deadline, f"{text!r} was never embedded"
        time.sleep(0.05)


def test_a_temporary_chat_reads_memory_and_leaves_no_trace(make_proxy, fake_upstream):
    proxy = make_proxy({"embeddings": {"enabled": True, "model": "fake-embed",
                                       "dimensions": 32}})
    client = proxy.client()
    assert say(client, "chat-1", "My name is Ada") == "Got it, I'll remember that."
    assert say(client, "chat-1", "Remember in archive: the locker code is 4711") == \
        "Got it, I'll remember that."
    assert "Echo" in say(client, "chat-1", "The code word is alpha")
    wait_until_embedded(fake_upstream, "The code word is alpha")
    before = snapshot(proxy)

    # blocks in the prompt, only the searches offered
    raw, reply = chat(client, "temporary:ypfMvzPsftDnm9pJAAAF",
                      [{"role": "user", "content": "What is my name?"}])
    assert reply.choices[0].message.content == "Your name is Ada."
    assert raw.headers["x-memproxy-ephemeral"] == "true"
    assert raw.headers["x-memproxy-conversation-id"] == "temporary:ypfMvzPsftDnm9pJAAAF"
    body = fake_upstream.last.json
    assert "Name: Ada" in system_text(body) and "temporary chat" in system_text(body)
    assert SEARCH_TOOLS <= offered(body) and not EDIT_TOOLS & offered(body)

    # both searches read the real memory
    assert "alpha" in say(client, "temporary:ypfMvzPsftDnm9pJAAAF", "Search history: code word")
    assert "4711" in say(client, "temporary:ypfMvzPsftDnm9pJAAAF", "Search archive: locker")
    # no edit: the tool is not there
    assert say(client, "local:1fHZ_OBsNxD_Z-WiAAAH", "My name is Eve") == \
        "Tool core_memory_append is unavailable."

    # a whole temporary chat, resent and streamed as Open WebUI does
    history = [{"role": "user", "content": "The code word is gamma"}]
    history.append({"role": "assistant", "content": say(
        client, "temporary:1fHZ_OBsNxD_Z-WiAAAH", history[0]["content"])})
    history.append({"role": "user", "content": "What is the code word?"})
    _, stream = chat(client, "temporary:1fHZ_OBsNxD_Z-WiAAAH", history, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    sent = [m for m in fake_upstream.last.json["messages"] if m["role"] != "system"]
    assert sent == history

    # the chat's side requests are passed through as in any chat
    follow_ups = {"model": MODEL, "stream": False, "messages": [{"role": "user", "content":
                  "### Task:\nPredict 3-5 useful messages this user might naturally send next."
                  "\n### Chat History:\n<chat_history>\nUSER: The code word is gamma\n"
                  "</chat_history>"}]}
    raw_body = json.dumps(follow_ups).encode()
    side = httpx.post(f"{proxy.base_url}/chat/completions", content=raw_body, timeout=30,
                      headers={"content-type": "application/json", "X-OpenWebUI-User-Id": AGENT,
                               "X-OpenWebUI-Chat-Id": "temporary:1fHZ_OBsNxD_Z-WiAAAH"})
    assert side.status_code == 200 and "x-memproxy-ephemeral" not in side.headers
    assert fake_upstream.last.body == raw_body

    # nothing stored: the REST API shows the agent exactly as before, the store has no row
    assert snapshot(proxy) == before
    for chat_id in ("temporary:ypfMvzPsftDnm9pJAAAF", "temporary:1fHZ_OBsNxD_Z-WiAAAH",
                    "local:1fHZ_OBsNxD_Z-WiAAAH"):
        assert stored_conversation(proxy, AGENT, chat_id) is None
    # ... nothing recallable from another chat ...
    found = say(client, "chat-2", "Search history: gamma")
    assert "gamma" not in found.removeprefix("Search results: ")
    # ... and nothing embedded (chat-2's own turn is, so the worker did run since)
    wait_until_embedded(fake_upstream, "Search history: gamma")
    assert not any("The code word is gamma" in t for t in embedded_texts(fake_upstream))


def test_an_unknown_agent_is_answered_with_default_blocks_and_not_created(
        make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    answer = say(client, "temporary:new", "Search history: anything")
    assert answer.startswith("Search results: No matching messages")
    assert "<persona>" in system_text(fake_upstream.requests[0].json)
    assert "<human>" in system_text(fake_upstream.requests[0].json)
    assert snapshot(proxy) is None
    with proxy.http() as api:
        assert api.get("/v1/agents").json()["data"] == []


def test_x_memory_ephemeral_makes_any_request_temporary(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/{AGENT}/v1")
    assert client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}]
    ).choices[0].message.content == "Got it, I'll remember that."
    before = snapshot(proxy)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Remember in archive: secret"}],
        extra_headers={"X-Memory": "ephemeral"})
    assert raw.parse().choices[0].message.content == "Tool archival_memory_insert is unavailable."
    assert raw.headers["x-memproxy-ephemeral"] == "true"
    assert snapshot(proxy) == before


def test_the_prefixes_can_be_turned_off(make_proxy, fake_upstream):
    proxy = make_proxy({"identity": {"ephemeral_conversation_prefixes": []}})
    raw, _ = chat(proxy.client(), "temporary:kept", [{"role": "user", "content": "Hello"}])
    assert "x-memproxy-ephemeral" not in raw.headers
    assert stored_conversation(proxy, AGENT, "temporary:kept") is not None
    assert json.dumps(snapshot(proxy)["conversations"]).count("temporary:kept") == 1
