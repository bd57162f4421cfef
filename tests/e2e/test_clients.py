"""Issue 4: what real chat UIs and SDKs send — resent histories, regenerates, edits, branch
switches, side requests, retries and concurrency — stored exactly once, sent upstream exactly."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests import storage
from tests.fakes import Fault, Reply, scripted_model
from tests.servers import run_concurrently

MODEL = "gpt-4o-mini"


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def visible(proxy, agent, conversation="default"):
    return storage.roles_and_texts(
        storage.transcript(proxy.settings.database.url, agent, conversation))


def sent_conversation(fake):
    """The non-system messages of the last request the upstream received."""
    return [(m["role"], m["content"]) for m in fake.last.json["messages"]
            if m["role"] != "system"]


def stream_text(proxy, messages, headers):
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", headers=headers, timeout=30,
                      json={"model": MODEL, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200, r.read()
        text = ""
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    text += choice["delta"].get("content") or ""
    return text


def test_open_webui_session(make_proxy, fake_upstream):
    """Stream, full path each turn, a title side request, regenerate, edit, branch switch."""
    proxy = make_proxy()
    headers = {"X-OpenWebUI-User-Id": "user-7", "X-OpenWebUI-Chat-Id": "chat-1",
               "X-OpenWebUI-User-Name": "Ada"}
    system = {"role": "system", "content": "You are a friendly assistant."}

    def turn(history):
        reply = stream_text(proxy, [system, *history], headers)
        return reply

    a1 = turn([u("Hello!")])
    assert visible(proxy, "user-7", "chat-1") == [("user", "Hello!"), ("assistant", a1)]
    assert sent_conversation(fake_upstream) == [("user", "Hello!")]

    a2 = turn([u("Hello!"), a(a1), u("Plan a trip to Oslo")])
    expected = [("user", "Hello!"), ("assistant", a1), ("user", "Plan a trip to Oslo")]
    assert sent_conversation(fake_upstream) == expected
    assert visible(proxy, "user-7", "chat-1") == [*expected, ("assistant", a2)]

    # the title request: passed through untouched, not stored
    calls = len(fake_upstream.requests)
    title = {"model": MODEL, "stream": False, "messages": [u(
        "### Task:\nGenerate a concise, 3-5 word title for the chat.\n<chat_history>\n"
        f"USER: Hello!\nASSISTANT: {a1}\n</chat_history>")]}
    raw = json.dumps(title).encode()
    r = httpx.post(f"{proxy.base_url}/chat/completions", content=raw,
                   headers={**headers, "content-type": "application/json"})
    assert r.status_code == 200 and "x-memproxy-agent-id" not in r.headers
    assert fake_upstream.last.body == raw and len(fake_upstream.requests) == calls + 1
    assert len(visible(proxy, "user-7", "chat-1")) == 4

    # regenerate: the same path again; the old reply is superseded, never sent upstream again
    fake_upstream.responder = lambda body: Reply("A different plan for Oslo.")
    a2b = turn([u("Hello!"), a(a1), u("Plan a trip to Oslo")])
    assert a2b == "A different plan for Oslo."
    assert sent_conversation(fake_upstream) == expected
    assert visible(proxy, "user-7", "chat-1") == [*expected, ("assistant", a2b)]
    fake_upstream.responder = scripted_model

    # edit of message 3: the stored messages from there are superseded
    a2e = turn([u("Hello!"), a(a1), u("Plan a trip to Bergen")])
    edited = [("user", "Hello!"), ("assistant", a1), ("user", "Plan a trip to Bergen")]
    assert sent_conversation(fake_upstream) == edited
    assert visible(proxy, "user-7", "chat-1") == [*edited, ("assistant", a2e)]

    # switch back to the Oslo branch and continue it
    a3 = turn([u("Hello!"), a(a1), u("Plan a trip to Oslo"), a(a2b), u("In June")])
    oslo = [*expected, ("assistant", a2b), ("user", "In June")]
    assert sent_conversation(fake_upstream) == oslo
    assert visible(proxy, "user-7", "chat-1") == [*oslo, ("assistant", a3)]
    everything = storage.transcript(proxy.settings.database.url, "user-7", "chat-1",
                                    include_superseded=True)
    # superseded: the first Oslo reply (regenerate), the Bergen question and reply (switch
    # back); the Oslo branch was restored, not stored again
    assert sum(m.superseded for m in everything) == 3
    assert sum(m.data.get("content") == "Plan a trip to Oslo" for m in everything) == 1
    assert all(not m.in_context for m in everything if m.superseded)


def test_librechat_session(make_proxy, fake_upstream):
    """`user` as the agent, a templated conversation header, a client-side summary."""
    proxy = make_proxy({"identity": {"agent_from_user": True}})
    client = proxy.client()
    headers = {"X-Conversation-Id": "6650f0c2-conv"}

    def turn(history):
        return client.chat.completions.create(
            model=MODEL, messages=history, user="librechat-user-1", extra_headers=headers,
        ).choices[0].message.content

    history = []
    for text in ("one", "two", "three"):
        history.append(u(text))
        history.append(a(turn(history)))
    # LibreChat's own summarization replaces the first two turns by a system summary
    compacted = [{"role": "system", "content": "Summary: the user said one and two."},
                 *history[4:], u("four")]
    reply = turn(compacted)
    assert sent_conversation(fake_upstream)[-3:] == [
        ("user", "three"), ("assistant", history[5]["content"]), ("user", "four")]
    stored = visible(proxy, "librechat-user-1", "6650f0c2-conv")
    assert [t for _, t in stored] == ["one", history[1]["content"], "two", history[3]["content"],
                                      "three", history[5]["content"], "four", reply]
    assert "Summary: the user said one and two." in fake_upstream.last.json["messages"][0]["content"]


def test_the_first_message_again_is_new_input_from_an_sdk_but_a_regenerate_for_a_chat_ui(
    make_proxy, fake_upstream
):
    proxy = make_proxy()
    client = proxy.client()
    sdk = {"X-Agent-Id": "sdk"}
    for text in ("hello", "yes", "yes"):  # "yes" after "hello" shows the client is SDK-style
        client.chat.completions.create(model=MODEL, messages=[u(text)], extra_headers=sdk)
    assert [t for r, t in visible(proxy, "sdk") if r == "user"] == ["hello", "yes", "yes"]

    # while the style is unknown, the very same body again after its answer arrived (and no
    # retry marker) is the client asking again: a new turn (docs/conversation-tree.md)
    fresh = {"X-Agent-Id": "fresh"}
    client.chat.completions.create(model=MODEL, messages=[u("hi")], extra_headers=fresh)
    client.chat.completions.create(model=MODEL, messages=[u("hi")], extra_headers=fresh)
    assert [r for r, _ in visible(proxy, "fresh")] == ["user", "assistant"] * 2

    ui = {"X-Agent-Id": "ui", "X-Conversation-Id": "c"}
    r1 = client.chat.completions.create(model=MODEL, messages=[u("hi")], extra_headers=ui)
    a1 = r1.choices[0].message.content
    client.chat.completions.create(model=MODEL, messages=[u("hi"), a(a1), u("more")],
                                   extra_headers=ui)
    # the UI regenerates its first reply: it sends the lone first message again
    client.chat.completions.create(model=MODEL, messages=[u("hi")], extra_headers=ui)
    assert [r for r, _ in visible(proxy, "ui", "c")] == ["user", "assistant"]
    assert sent_conversation(fake_upstream) == [("user", "hi")]


@pytest.mark.parametrize("memproxy_retries", [0, 2])
def test_sdk_retry_after_a_dropped_connection_stores_one_turn(
    make_proxy, fake_upstream, memproxy_retries
):
    proxy = make_proxy({"upstream": {"max_retries": memproxy_retries}})
    fake_upstream.push(Fault.drop())
    client = proxy.client(max_retries=2)
    reply = client.chat.completions.create(model=MODEL, messages=[u("are you there")],
                                           extra_headers={"X-Agent-Id": "r"})
    assert reply.choices[0].message.content.startswith("Echo: are you there")
    assert visible(proxy, "r") == [("user", "are you there"),
                                   ("assistant", reply.choices[0].message.content)]


def test_sdk_timeout_then_retry_gets_the_same_answer(make_proxy, fake_upstream):
    """The client gives up while the turn is still running and retries: the retry waits for
    the running turn and gets its answer (a double submit); nothing is stored twice."""
    proxy = make_proxy()
    fake_upstream.push(Fault.delay(1.5))
    client = proxy.client(max_retries=1, timeout=1.0)
    reply = client.chat.completions.create(model=MODEL, messages=[u("slow one")],
                                           extra_headers={"X-Agent-Id": "t"})
    assert reply.choices[0].message.content.startswith("Echo: slow one")
    assert visible(proxy, "t") == [("user", "slow one"),
                                   ("assistant", reply.choices[0].message.content)]
    assert len(fake_upstream.requests) == 1


def test_thirty_concurrent_requests_to_one_conversation(make_proxy, fake_upstream):
    proxy = make_proxy()
    errors = run_concurrently(30, lambda i: proxy.client(timeout=60).chat.completions.create(
        model=MODEL, messages=[u(f"message {i}")], extra_headers={"X-Agent-Id": "busy"}))
    assert errors == []
    stored = visible(proxy, "busy")
    assert [r for r, _ in stored] == ["user", "assistant"] * 30
    for (_, question), (_, answer) in zip(stored[::2], stored[1::2], strict=True):
        assert answer.startswith(f"Echo: {question} ")
    assert sorted(q for _, q in stored[::2]) == sorted(f"message {i}" for i in range(30))


def test_other_conversations_are_not_blocked(make_proxy, fake_upstream):
    proxy = make_proxy()

    def slow_for_a(body):
        if any("slow" in str(m.get("content")) for m in body["messages"]):
            return Fault.delay(1.5, then=scripted_model(body))
        return scripted_model(body)

    fake_upstream.responder = slow_for_a
    done = {}

    def send(agent, text):
        proxy.client().chat.completions.create(model=MODEL, messages=[u(text)],
                                               extra_headers={"X-Agent-Id": agent})
        done[agent] = time.monotonic()

    slow = threading.Thread(target=send, args=("a", "slow please"))
    slow.start()
    time.sleep(0.2)
    send("b", "quick")
    slow.join()
    assert done["b"] < done["a"]


def test_a_waiting_request_gets_409_after_the_lock_timeout(make_proxy, fake_upstream):
    proxy = make_proxy({"agent": {"lock_timeout_s": 0.3}})
    fake_upstream.push(Fault.delay(1.5))
    first = threading.Thread(target=lambda: proxy.client().chat.completions.create(
        model=MODEL, messages=[u("first")], extra_headers={"X-Agent-Id": "l"}))
    first.start()
    time.sleep(0.2)
    with pytest.raises(openai.ConflictError) as err:
        proxy.client().chat.completions.create(model=MODEL, messages=[u("second")],
                                               extra_headers={"X-Agent-Id": "l"})
    assert err.value.code == "conversation_busy"
    assert int(err.value.response.headers["retry-after"]) >= 1
    first.join()
    assert [t for _, t in visible(proxy, "l")][0] == "first"


def test_chats_without_ids_are_told_apart_by_their_history(make_proxy, fake_upstream):
    """A UI that names neither agent conversation: many chats of one user stay separate, each
    resent history continues its own conversation, and nothing is stored twice."""
    proxy = make_proxy()
    client = proxy.client()
    agent = {"X-Agent-Id": "multi"}

    def send(history):
        return client.chat.completions.create(model=MODEL, messages=history,
                                              extra_headers=agent)

    chat_a = [u("Plan a trip to Oslo")]
    chat_a.append(a(send(chat_a).choices[0].message.content))
    chat_a.append(u("In June"))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat_a, extra_headers=agent)
    first_id = raw.headers["x-memproxy-conversation-id"]
    chat_a.append(a(raw.parse().choices[0].message.content))

    # the client is now known to resend histories: a lone message is a new chat
    chat_b = [u("Recipe for pancakes?")]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat_b, extra_headers=agent)
    second_id = raw.headers["x-memproxy-conversation-id"]
    assert second_id != first_id
    chat_b.append(a(raw.parse().choices[0].message.content))
    chat_b.append(u("Without eggs"))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat_b, extra_headers=agent)
    assert raw.headers["x-memproxy-conversation-id"] == second_id
    assert sent_conversation(fake_upstream) == [(m["role"], m["content"]) for m in chat_b]

    # back to the first chat
    chat_a.append(u("And in July?"))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat_a, extra_headers=agent)
    assert raw.headers["x-memproxy-conversation-id"] == first_id
    assert sent_conversation(fake_upstream) == [(m["role"], m["content"]) for m in chat_a]
    assert [t for _, t in visible(proxy, "multi", first_id)][:5] == [
        m["content"] for m in chat_a]
    assert len(visible(proxy, "multi", second_id)) == 4
