"""Issue 18, items 5 and 6, on a real server and both backends, through the openai SDK: a
speaker found by the `name` the client sent, with the turns around the hit and their dates, in
`conversation_search` results, in automatic recall and by the REST search."""

from __future__ import annotations

import json
import re

from proxy.core.recall import RECALL_CLOSE, RECALL_OPEN

MODEL = "gpt-4o-mini"
STAMP = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"


def say(client, text: str, conversation: str, name: str | None = None) -> str:
    message = {"role": "user", "content": text}
    if name:
        message["name"] = name
    reply = client.chat.completions.create(
        model=MODEL, messages=[message],
        extra_headers={"X-Agent-Id": "a1", "X-Conversation-Id": conversation})
    return reply.choices[0].message.content


def talk(client) -> None:
    say(client, "We should plan the weekend", "c1")
    say(client, "I went hiking on Sunday", "c1", name="Caroline")
    say(client, "The weather was great", "c1")


def test_conversation_search_finds_the_speaker_with_the_turns_around(make_proxy):
    client = make_proxy().client()
    talk(client)
    reply = say(client, "Search history: Caroline", "c2")
    hits = json.loads(reply.removeprefix("Search results: "))
    assert len(hits) == 1
    hit = hits[0]
    assert (hit["role"], hit["name"], hit["content"]) == (
        "user", "Caroline", "I went hiking on Sunday")
    assert list(hit) == ["timestamp", "role", "name", "content", "before", "after"]
    assert "name" not in hit["before"][0]  # the assistant's replies have none
    assert [(m["role"], m["content"].split(" (saw")[0]) for m in hit["before"]] == [
        ("assistant", "Echo: We should plan the weekend")]
    assert [(m["role"], m["content"].split(" (saw")[0]) for m in hit["after"]] == [
        ("assistant", "Echo: I went hiking on Sunday")]
    for message in (hit, *hit["before"], *hit["after"]):
        assert re.fullmatch(STAMP, message["timestamp"]), message


def test_search_neighbours_0_shows_the_hits_alone(make_proxy):
    client = make_proxy({"memory": {"search_neighbours": 0}}).client()
    talk(client)
    hits = json.loads(say(client, "Search history: Caroline", "c2")
                      .removeprefix("Search results: "))
    assert [set(h) for h in hits] == [{"timestamp", "role", "name", "content"}]


def test_two_turns_each_side_when_configured(make_proxy):
    client = make_proxy({"memory": {"search_neighbours": 2}}).client()
    talk(client)
    hit = json.loads(say(client, "Search history: Caroline", "c2")
                     .removeprefix("Search results: "))[0]
    assert [m["role"] for m in hit["before"]] == ["user", "assistant"]
    assert [m["role"] for m in hit["after"]] == ["assistant", "user"]
    assert hit["after"][1]["content"] == "The weather was great"


def test_automatic_recall_shows_the_turns_around_a_hit(make_proxy, fake_upstream):
    client = make_proxy({"models": {MODEL: {"tools": False}}}).client()
    talk(client)
    say(client, "What did Caroline do?", "c2")
    system = "\n".join(m["content"] for m in fake_upstream.last.json["messages"]
                       if m["role"] == "system")
    section = system[system.index(RECALL_OPEN):system.index(RECALL_CLOSE)]
    lines = section.splitlines()
    hit = next(i for i, line in enumerate(lines) if "said: I went hiking" in line)
    assert re.match(rf"- \[{STAMP}\] Caroline \(user\) said: I went hiking on Sunday$",
                    lines[hit])
    assert re.match(rf"  \(before\) \[{STAMP}\] assistant said: Echo: We should plan",
                    lines[hit + 1])
    assert re.match(rf"  \(after\) \[{STAMP}\] assistant said: Echo: I went hiking",
                    lines[hit + 2])


def test_the_rest_search_finds_the_speaker(make_proxy):
    proxy = make_proxy()
    talk(proxy.client())
    with proxy.http() as http:
        found = http.get("/v1/agents/a1/messages", params={"query": "caroline"}).json()
    assert [m["content"] for m in found["data"]] == ["I went hiking on Sunday"]
