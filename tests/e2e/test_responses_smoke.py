"""Lead's smoke test of the Responses path (kept small; rtests writes the full suite)."""

from __future__ import annotations

from tests.fakes import Reply
from tests.openapi_check import validate_response

MODEL = "gpt-4o-mini"


def test_plain_and_agent_chain(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    fake_upstream.push(Reply(content="Hello Ada"))
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Be brief")
    validate_response(first.model_dump(mode="json", exclude_unset=True))
    assert first.output_text == "Hello Ada"
    fake_upstream.push(Reply(content="You are Ada"))
    second = client.responses.create(model=MODEL, input="Who am I?",
                                     previous_response_id=first.id)
    sent = fake_upstream.last.json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "My name is Ada."), ("assistant", "Hello Ada"), ("user", "Who am I?")]
    assert second.previous_response_id == first.id
    got = client.responses.retrieve(second.id)
    assert got.output_text == "You are Ada"
    events = []
    fake_upstream.push(Reply(content="streamed answer"))
    with client.responses.stream(model=MODEL, input="stream it",
                                 previous_response_id=second.id) as stream:
        for event in stream:
            events.append(event)
            assert event.sequence_number == len(events) - 1
        final = stream.get_final_response()
    assert final.output_text == "streamed answer"
    agent = proxy.client(base_url=f"{proxy.url}/agents/ada/v1")
    fake_upstream.push(Reply(content="agent says hi"))
    r1 = agent.responses.create(model=MODEL, input="hi")
    fake_upstream.push(Reply(content="agent again"))
    r2 = agent.responses.create(model=MODEL, input="again", previous_response_id=r1.id)
    assert r2.output_text == "agent again"
    sent = [m for m in fake_upstream.last.json["messages"] if m["role"] != "system"]
    assert [m["content"] for m in sent] == ["hi", "agent says hi", "again"]
    conv = client.conversations.create(items=[{"type": "message", "role": "user",
                                               "content": "earlier"}])
    fake_upstream.push(Reply(content="in conv"))
    r3 = client.responses.create(model=MODEL, input="now", conversation=conv.id)
    items = client.conversations.items.list(conv.id, order="asc")
    assert len(items.data) == 3 and r3.conversation.id == conv.id
