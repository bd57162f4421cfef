"""Chat UIs' side requests through a real memproxy (docs/clients.md "Side requests"): each is
forwarded byte for byte and stores nothing, and a chat they name stays exactly as it was
(issue 15, item 3: Open WebUI's emoji prompt once erased a chat, its merge prompt made a junk
conversation each time)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests import storage
from tests.side_requests import FROM_SOURCES, RECORDED

USER_ID = RECORDED[0]["headers"]["x-openwebui-user-id"]  # the recording's one user


def post_raw(proxy, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}/chat/completions", content=raw, timeout=30,
                      headers={**headers, "content-type": "application/json"})


def forwarded_unchanged(proxy, fake_upstream, body: dict, headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    calls = len(fake_upstream.requests)
    response = post_raw(proxy, raw, headers)
    assert response.status_code == 200, response.text
    assert "x-memproxy-agent-id" not in response.headers  # not a turn
    assert len(fake_upstream.requests) == calls + 1
    assert fake_upstream.last.body == raw


def agents(proxy) -> list[str]:
    with proxy.http() as api:
        return [a["id"] for a in api.get("/v1/agents").json()["data"]]


def conversations(proxy, agent: str) -> list[tuple[str, int]]:
    with proxy.http() as api:
        return [(c["id"], c["messages"])
                for c in api.get(f"/v1/agents/{agent}/conversations").json()["data"]]


def test_recorded_open_webui_side_requests_are_forwarded_and_store_nothing(
        make_proxy, fake_upstream):
    proxy = make_proxy()
    for request in RECORDED:
        forwarded_unchanged(proxy, fake_upstream, request["body"], request["headers"])
    assert agents(proxy) == []  # no agent, no conversation, no message


@pytest.mark.parametrize("name", sorted(FROM_SOURCES))
def test_side_prompts_of_open_webui_and_librechat_store_nothing(make_proxy, fake_upstream, name):
    proxy = make_proxy()
    body = {"model": "gpt-4o-mini", "messages": FROM_SOURCES[name], "stream": False}
    forwarded_unchanged(proxy, fake_upstream, body,
                        {"X-Agent-Id": "ada", "X-Conversation-Id": "chat-1"})
    assert agents(proxy) == []


def test_side_requests_leave_the_chat_they_name_as_it_was(make_proxy, fake_upstream):
    proxy = make_proxy()
    chat_id = RECORDED[4]["headers"]["x-openwebui-chat-id"]  # the emoji request's chat
    headers = {"x-openwebui-user-id": USER_ID, "x-openwebui-chat-id": chat_id}

    def turn(history):
        raw = json.dumps({"model": "gpt-4o-mini", "messages": history, "stream": False})
        response = post_raw(proxy, raw.encode(), headers)
        assert response.status_code == 200, response.text
        return {"role": "assistant", "content": response.json()["choices"][0]["message"]
                ["content"]}

    history = [{"role": "user", "content": "First message here"}]
    history += [turn(history), {"role": "user", "content": "Second message is about cats"}]
    history.append(turn(history))
    stored = storage.roles_and_texts(storage.transcript(
        proxy.settings.database.url, USER_ID, chat_id))
    assert [(m["role"], m["content"]) for m in history] == stored
    before = conversations(proxy, USER_ID)

    for request in RECORDED:  # in this chat (the merge request names none, as recorded)
        extra = {"x-openwebui-chat-id": chat_id} if "x-openwebui-chat-id" in request[
            "headers"] else {}
        forwarded_unchanged(proxy, fake_upstream, request["body"],
                            {"x-openwebui-user-id": USER_ID, **extra})
    assert conversations(proxy, USER_ID) == before
    assert storage.roles_and_texts(storage.transcript(
        proxy.settings.database.url, USER_ID, chat_id)) == stored

    history.append({"role": "user", "content": "Fourth message after the emoji request"})
    turn(history)
    sent = [(m["role"], m["content"]) for m in fake_upstream.last.json["messages"]
            if m["role"] != "system"]
    assert sent == [(m["role"], m["content"]) for m in history]
