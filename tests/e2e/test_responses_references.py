"""`item_reference` input items: an earlier stored item named by its id (the Vercel AI SDK's
default model resends earlier assistant turns this way, without `previous_response_id`)."""

from __future__ import annotations

import openai
import pytest

from tests.fakes import Reply

MODEL = "gpt-4o-mini"


def dialogue(body):
    return [(m["role"], m.get("content")) for m in body["messages"] if m["role"] != "system"]


@pytest.mark.parametrize("base", ["/v1", "/agents/rita/v1"])
def test_a_reference_is_the_stored_item(make_proxy, fake_upstream, base):
    proxy = make_proxy()
    client = proxy.client(base_url=proxy.url + base)
    fake_upstream.push(Reply(content="Paris."))
    first = client.responses.create(model=MODEL, input="Capital of France?")
    answer_id = first.output[0].id
    question_id = client.responses.input_items.list(first.id).data[0].id
    fake_upstream.push(Reply(content="About 2 million."))
    second = client.responses.create(model=MODEL, input=[
        {"type": "item_reference", "id": question_id},
        {"type": "item_reference", "id": answer_id},
        {"role": "user", "content": "And its population?"}])
    assert second.output_text == "About 2 million."
    assert dialogue(fake_upstream.last.json)[-3:] == [
        ("user", "Capital of France?"), ("assistant", "Paris."),
        ("user", "And its population?")]
    # stored resolved: a chain on it needs no lookup of the references again
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in listed] == ["message", "message", "message"]
    assert listed[1].id == answer_id


def test_unknown_and_other_tenants_references_are_404(make_proxy, fake_upstream):
    proxy = make_proxy({"auth": {"keys": {"key-a": "tenant-a", "key-b": "tenant-b"}}})
    a = proxy.client(api_key="key-a")
    b = proxy.client(api_key="key-b")
    fake_upstream.push(Reply(content="secret answer"))
    first = a.responses.create(model=MODEL, input="tell me")
    for client, item_id in ((a, "msg_missing"), (b, first.output[0].id)):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model=MODEL, input=[
                {"type": "item_reference", "id": item_id}, {"role": "user", "content": "go"}])
        assert info.value.body["param"] == "input[0]"
        assert info.value.body["code"] == "item_not_found"
    assert len(fake_upstream.requests) == 1  # refused before any upstream call
