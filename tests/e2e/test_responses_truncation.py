"""`truncation` on the Responses path: `auto` without an agent drops the oldest items; an
agent pages its context unless the client explicitly asked for `disabled` (then a 400, as at
OpenAI)."""

from __future__ import annotations

import openai
import pytest

from tests.fakes import Reply

MODEL = "tiny-model"
WINDOW = {"models": {MODEL: {"context_window": 1200}},
          "memory": {"reserve_output_tokens": 100}}


def words(n, tag):
    return " ".join(f"{tag}{i}" for i in range(n))


def chain(client, fake, count, **kw):
    previous = None
    for i in range(count):
        fake.push(Reply(content=words(60, f"a{i}x")))
        response = client.responses.create(model=MODEL, input=words(60, f"u{i}x"),
                                           previous_response_id=previous, **kw)
        previous = response.id
    return previous


def test_auto_without_agent_drops_the_oldest_items(make_proxy, fake_upstream):
    proxy = make_proxy(WINDOW)
    client = proxy.client()
    last = chain(client, fake_upstream, 8, truncation="auto")
    sent = fake_upstream.last.json["messages"]
    assert sent[-1]["content"] == words(60, "u7x")
    assert len(sent) < 15  # 8 inputs and 7 answers, some left out
    assert sent[0]["role"] == "user"  # whole exchanges dropped from the start
    # the stored chain keeps everything: a later request with a larger window sees it all
    assert len(client.responses.input_items.list(last).data) == 1


def test_disabled_without_agent_sends_everything(make_proxy, fake_upstream):
    proxy = make_proxy(WINDOW)
    chain(proxy.client(), fake_upstream, 8)
    assert len(fake_upstream.last.json["messages"]) == 15  # the upstream judges the overflow


def test_agent_pages_by_default_and_refuses_when_disabled(make_proxy, fake_upstream):
    # memproxy's own system prompt (instructions, memory blocks) needs room too. Summaries
    # inline: the replies pushed below pair with the turns only when no background summarizer
    # call takes one from the same queue.
    proxy = make_proxy({"models": {MODEL: {"context_window": 3000}},
                        "memory": {"reserve_output_tokens": 100, "summaries": "inline"}})
    agent = proxy.client(base_url=f"{proxy.url}/agents/tina/v1")
    previous = chain(agent, fake_upstream, 12)  # paged out as it grew: every turn answered
    fake_upstream.push(Reply(content="fits"))
    with pytest.raises(openai.BadRequestError) as info:
        agent.responses.create(model=MODEL, input=words(500, "big"),
                               previous_response_id=previous, truncation="disabled")
    assert info.value.code == "context_length_exceeded"
    assert "truncation is disabled" in info.value.message
    fake_upstream.push(Reply(content="paged"))
    ok = agent.responses.create(model=MODEL, input=words(500, "big"),
                                previous_response_id=previous)
    assert ok.output_text == "paged"
