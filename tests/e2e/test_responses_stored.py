"""Stored responses and the Conversations API through openai-python (issue #16), on SQLite and
Postgres: retrieve, delete, `input_items.list` paging, replaying a stored stream, the
Conversations API end to end, tenant isolation, `store: false`, background responses (poll and
cancel) and the error answers. Every answer is validated against the OpenAI description (the
`spec` fixture, tests/responses_check.py)."""

from __future__ import annotations

import time

import openai
import pytest

from tests import secrets
from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import (
    MODEL,
    TOOL,
    TWO_TENANTS,
    client,
    dialogue,
    echo,
    error_of,
    poll,
)
from tests.fakes import Fault

spec = rh.spec

FIVE = [{"role": "user", "content": f"Line {i}"} for i in range(5)]


def test_retrieve_list_input_items_and_delete(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    created = oa.responses.create(model=MODEL, input=FIVE, metadata={"run": "r1"})
    assert created.metadata == {"run": "r1"} and created.store is True
    assert oa.responses.retrieve(created.id).model_dump() == created.model_dump()

    newest_first = oa.responses.input_items.list(created.id)
    texts = [item.content[0].text for item in newest_first.data]
    assert texts == [f"Line {i}" for i in reversed(range(5))]
    assert newest_first.has_more is False and all(item.id for item in newest_first.data)
    ids = [item.id for item in reversed(newest_first.data)]  # oldest first
    assert len(set(ids)) == 5

    page = oa.responses.input_items.list(created.id, limit=2, order="asc")
    assert [item.id for item in page.data] == ids[:2] and page.has_more is True
    page = oa.responses.input_items.list(created.id, limit=2, order="asc", after=ids[1])
    assert [item.id for item in page.data] == ids[2:4] and page.has_more is True
    page = oa.responses.input_items.list(created.id, limit=2, order="desc", after=ids[2])
    assert [item.id for item in page.data] == [ids[1], ids[0]] and page.has_more is False
    # the SDK's auto-paging follows `after` to the end
    assert [item.id for item in oa.responses.input_items.list(
        created.id, limit=2, order="asc")] == ids
    assert len(spec.checked("ResponseItemList")) >= 6

    assert oa.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError) as gone:
        oa.responses.retrieve(created.id)
    assert error_of(gone.value)["param"] in ("response_id", None)
    for call in (lambda: oa.responses.delete(created.id),
                 lambda: oa.responses.input_items.list(created.id),
                 lambda: oa.responses.create(model=MODEL, input="more",
                                             previous_response_id=created.id)):
        with pytest.raises(openai.NotFoundError):
            call()


def test_replay_a_stored_stream_from_a_sequence_number(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    created = oa.responses.create(model=MODEL, input="Replay me later")
    events = list(oa.responses.retrieve(created.id, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.model_dump() == created.model_dump()
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == created.output_text

    later = list(oa.responses.retrieve(created.id, stream=True, starting_after=3))
    assert [e.sequence_number for e in later] == list(range(4, len(events)))
    assert [e.model_dump() for e in later] == [e.model_dump() for e in events[4:]]
    assert list(oa.responses.retrieve(created.id, stream=True,
                                      starting_after=len(events) - 1)) == []


def test_conversations_api_end_to_end(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    conversation = oa.conversations.create(metadata={"topic": "colours"}, items=[
        {"type": "message", "role": "user", "content": "My favourite colour is green."},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Noted: green."}]},
    ])
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "colours"}
    assert oa.conversations.retrieve(conversation.id).model_dump() == conversation.model_dump()
    updated = oa.conversations.update(conversation.id, metadata={"topic": "paint"})
    assert updated.metadata == {"topic": "paint"}
    assert oa.conversations.retrieve(conversation.id).metadata == {"topic": "paint"}

    added = oa.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": "I also like blue."}])
    [blue] = added.data
    assert blue.id and blue.type == "message"
    assert oa.conversations.items.retrieve(blue.id, conversation_id=conversation.id
                                           ).model_dump() == blue.model_dump()

    def texts(order: str = "asc") -> list[str]:
        return [item.content[0].text for item in
                oa.conversations.items.list(conversation.id, order=order)]

    assert texts() == ["My favourite colour is green.", "Noted: green.", "I also like blue."]
    assert texts("desc") == list(reversed(texts()))
    first_page = oa.conversations.items.list(conversation.id, order="asc", limit=2)
    assert len(first_page.data) == 2 and first_page.has_more is True
    rest = oa.conversations.items.list(conversation.id, order="asc", limit=2,
                                       after=first_page.data[-1].id)
    assert [i.id for i in rest.data] == [blue.id] and rest.has_more is False

    answer = oa.responses.create(model=MODEL, input="Which colours do I like?",
                                 conversation=conversation.id)
    assert answer.conversation.id == conversation.id
    assert dialogue(fake_upstream.last.json) == [
        ("user", "My favourite colour is green."), ("assistant", "Noted: green."),
        ("user", "I also like blue."), ("user", "Which colours do I like?")]
    items = list(oa.conversations.items.list(conversation.id, order="asc"))
    assert [i.content[0].text for i in items][-2:] == ["Which colours do I like?",
                                                       answer.output_text]
    assert items[-1].id == answer.output[0].id

    # deleting an item takes it out of the next response's history
    deleted = oa.conversations.items.delete(blue.id, conversation_id=conversation.id)
    assert deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        oa.conversations.items.retrieve(blue.id, conversation_id=conversation.id)
    again = oa.responses.create(model=MODEL, input="And now?",
                                conversation={"id": conversation.id})
    assert "I also like blue." not in [t for _, t in dialogue(fake_upstream.last.json)]
    assert dialogue(fake_upstream.last.json)[-3:] == [
        ("user", "Which colours do I like?"), ("assistant", answer.output_text),
        ("user", "And now?")]
    assert again.output_text == echo("And now?", 3)

    # a conversation and a previous response together: 400, as at OpenAI
    with pytest.raises(openai.BadRequestError) as both:
        oa.responses.create(model=MODEL, input="x", conversation=conversation.id,
                            previous_response_id=answer.id)
    assert error_of(both.value)["param"] in ("previous_response_id", "conversation")

    removed = oa.conversations.delete(conversation.id)
    assert removed.deleted is True and removed.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        oa.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.create(model=MODEL, input="x", conversation=conversation.id)
    assert len(spec.checked("ConversationResource")) >= 4
    assert spec.checked("DeletedConversationResource")


def test_another_tenant_cannot_see_or_continue_a_response(make_proxy, fake_upstream, spec):
    proxy = make_proxy(TWO_TENANTS)
    mine = client(proxy, spec, api_key=secrets.TENANT_A_KEY)
    theirs = client(proxy, spec, api_key=secrets.TENANT_B_KEY)
    response = mine.responses.create(model=MODEL, input=secrets.MESSAGE_SECRET)
    conversation = mine.conversations.create(items=[{"role": "user", "content": "private"}])

    for call in (lambda: theirs.responses.retrieve(response.id),
                 lambda: theirs.responses.delete(response.id),
                 lambda: theirs.responses.input_items.list(response.id),
                 lambda: theirs.responses.create(model=MODEL, input="continue",
                                                 previous_response_id=response.id),
                 lambda: theirs.conversations.retrieve(conversation.id),
                 lambda: theirs.conversations.items.list(conversation.id),
                 lambda: theirs.conversations.delete(conversation.id),
                 lambda: theirs.conversations.update(conversation.id, metadata={"x": "y"}),
                 lambda: theirs.conversations.items.create(
                     conversation.id, items=[{"role": "user", "content": "intrusion"}]),
                 lambda: theirs.conversations.items.retrieve(
                     mine.conversations.items.list(conversation.id).data[0].id,
                     conversation_id=conversation.id),
                 lambda: theirs.responses.create(model=MODEL, input="continue",
                                                 conversation=conversation.id)):
        with pytest.raises(openai.NotFoundError) as denied:
            call()
        assert secrets.MESSAGE_SECRET not in str(denied.value.body)
    assert all(secrets.MESSAGE_SECRET not in str(r.json) for r in fake_upstream.requests[1:])
    assert mine.responses.retrieve(response.id).output_text == response.output_text
    assert mine.conversations.retrieve(conversation.id).metadata == {}
    assert [i.content[0].text for i in mine.conversations.items.list(conversation.id)] == [
        "private"]
    with pytest.raises(openai.AuthenticationError):
        client(proxy, spec, api_key=secrets.WRONG_KEY).responses.retrieve(response.id)


def test_store_false_is_not_kept(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    response = oa.responses.create(model=MODEL, input="Forget this", store=False)
    assert response.store is False and response.output_text == echo("Forget this", 1)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as chained:
        oa.responses.create(model=MODEL, input="and?", previous_response_id=response.id)
    assert error_of(chained.value)["param"] == "previous_response_id"


def test_background_response_polled_until_completed(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    fake_upstream.push(Fault.delay(0.3))
    queued = oa.responses.create(model=MODEL, input="Take your time", background=True)
    assert queued.background is True and queued.status in ("queued", "in_progress")
    assert queued.output == []
    done = poll(oa, queued.id)
    assert done.status == "completed" and done.output_text == echo("Take your time", 1)
    assert done.background is True and done.id == queued.id
    # cancelling a finished response changes nothing
    assert oa.responses.cancel(queued.id).status == "completed"
    # a background response may be chained on like any other
    follow = oa.responses.create(model=MODEL, input="Next", previous_response_id=done.id)
    assert follow.output_text == echo("Next", 2)


def test_cancel_a_running_background_response(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    fake_upstream.push(Fault.delay(60))
    queued = oa.responses.create(model=MODEL, input="A very slow answer", background=True)
    running = poll(oa, queued.id, until=("in_progress",))
    assert running.status == "in_progress"
    # cancel once the slow call has reached the upstream: cancelled before it, the run would
    # leave the scripted delay queued for the next request (on a slow machine it did)
    stop = time.monotonic() + 30
    while not fake_upstream.requests:
        assert time.monotonic() < stop, "the background run never called the upstream"
        time.sleep(0.02)
    cancelled = oa.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    assert oa.responses.retrieve(queued.id).status == "cancelled"
    # the cancelled run does not come back to overwrite it: the next answer is served at once
    later = oa.responses.create(model=MODEL, input="Quick one")
    assert later.output_text == echo("Quick one", 1)
    assert oa.responses.retrieve(queued.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        oa.responses.cancel(later.id)  # not a background response


@pytest.mark.parametrize("request_body, param", [
    ({"input": [{"type": "message", "role": "user",
                 "content": [{"type": "input_bogus", "text": "x"}]}]}, "input[0].content[0]"),
    ({"input": [{"role": "wizard", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"type": "function_call_output", "output": "no call id"}]}, "input[0]"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"input": "hi", "tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs_1"]}]},
     "tools[1]"),
    ({"input": 42}, "input"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
])
def test_bad_requests_are_400_with_the_param(make_proxy, fake_upstream, spec, request_body,
                                              param):
    proxy = make_proxy()
    oa = client(proxy, spec)
    with pytest.raises(openai.BadRequestError) as bad:
        oa.responses.create(model=MODEL, **request_body)
    error = error_of(bad.value)
    assert (error["param"] or "").startswith(param), error
    assert error["type"] == "invalid_request_error"
    assert fake_upstream.requests == []  # refused before reaching the model
    assert spec.checked("ErrorResponse")


def test_unknown_ids_are_404(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    with pytest.raises(openai.NotFoundError) as unknown:
        oa.responses.create(model=MODEL, input="hi", previous_response_id="resp_nope")
    assert error_of(unknown.value)["param"] == "previous_response_id"
    for call in (lambda: oa.responses.retrieve("resp_nope"),
                 lambda: oa.responses.delete("resp_nope"),
                 lambda: oa.responses.cancel("resp_nope"),
                 lambda: oa.responses.input_items.list("resp_nope"),
                 lambda: oa.conversations.retrieve("conv_nope"),
                 lambda: oa.conversations.items.list("conv_nope"),
                 lambda: oa.responses.create(model=MODEL, input="hi", conversation="conv_nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert fake_upstream.requests == []


def test_upstream_failure_is_a_failed_response(make_proxy, fake_upstream, spec):
    """An upstream error keeps its status for a plain request; a streamed one ends with
    `response.failed`, stored as failed."""
    proxy = make_proxy({"upstream": {"max_retries": 0}})
    oa = client(proxy, spec)
    fake_upstream.push(Fault.server_error(500))
    with pytest.raises(openai.APIStatusError) as failed:
        oa.responses.create(model=MODEL, input="hi")
    assert failed.value.status_code >= 500
    fake_upstream.clear()
    fake_upstream.push(Fault("stream_error", status=500, after_chunks=2,
                             body={"error": {"message": "boom", "type": "server_error",
                                             "param": None, "code": None}}))
    events = list(oa.responses.create(model=MODEL, input="Stream then fail please",
                                      stream=True))
    assert events[-1].type == "response.failed", [e.type for e in events]
    failed_response = events[-1].response
    assert failed_response.status == "failed" and failed_response.error.code == "server_error"
    assert "output_text.delta" in " ".join(e.type for e in events)  # it failed mid-stream
    # stored as the client saw it end, its partial message closed
    stored = oa.responses.retrieve(failed_response.id)
    assert stored.model_dump() == failed_response.model_dump()
    assert all(item.status != "in_progress" for item in stored.output)


def test_conversation_limits_are_400(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    many = [{"role": "user", "content": f"item {i}"} for i in range(21)]
    with pytest.raises(openai.BadRequestError) as too_many:
        oa.conversations.create(items=many)
    assert error_of(too_many.value)["param"] == "items"
    conversation = oa.conversations.create(items=many[:20])
    assert len(oa.conversations.items.create(conversation.id, items=many[20:]).data) == 1
    assert len(list(oa.conversations.items.list(conversation.id, limit=100))) == 21
    with pytest.raises(openai.BadRequestError) as metadata:
        oa.conversations.update(conversation.id, metadata={f"k{i}": "v" for i in range(17)})
    assert error_of(metadata.value)["param"] == "metadata"
    with pytest.raises(openai.BadRequestError) as bad_item:
        oa.conversations.items.create(conversation.id, items=[{"type": "nonsense"}])
    assert error_of(bad_item.value)["param"].startswith("items[0]")
    with pytest.raises(openai.BadRequestError):
        oa.conversations.items.list(conversation.id, limit=1000)
    with pytest.raises(openai.NotFoundError):
        oa.conversations.items.delete("msg_nope", conversation_id=conversation.id)


def test_a_background_response_on_an_agent_keeps_memory(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=rh.agent_url(proxy, "bg-agent"))
    queued = oa.responses.create(model=MODEL, input="My name is Ada", background=True)
    assert poll(oa, queued.id).output_text == "Got it, I'll remember that."
    asked = oa.responses.create(model=MODEL, input="What is my name?", background=True)
    done = poll(oa, asked.id)
    assert done.output_text == "Your name is Ada."
    assert [item.type for item in done.output] == ["message"]


def test_chains_longer_than_max_chain_are_refused(make_proxy, fake_upstream, spec):
    proxy = make_proxy({"responses": {"max_chain": 3}})
    oa = client(proxy, spec)
    previous = None
    for i in range(4):  # the fourth follows a chain of three
        previous = oa.responses.create(model=MODEL, input=f"Step {i}",
                                       previous_response_id=previous).id
    with pytest.raises(openai.BadRequestError) as too_long:
        oa.responses.create(model=MODEL, input="Step 4", previous_response_id=previous)
    assert error_of(too_long.value)["param"] == "previous_response_id"
    assert len(fake_upstream.requests) == 4


def test_responses_past_their_ttl_are_deleted(make_proxy, fake_upstream, spec):
    """`[responses] ttl_days`: a server sweeps expired responses (at start, then hourly);
    conversations do not expire."""
    ttl = {"responses": {"ttl_days": 0.2 / 86400}}  # 0.2 s
    proxy = make_proxy(ttl)
    oa = client(proxy, spec)
    response = oa.responses.create(model=MODEL, input="Short-lived")
    conversation = oa.conversations.create(items=[{"role": "user", "content": "kept"}])
    assert response.id
    time.sleep(0.3)  # past the ttl (the sweep itself is not timed)
    proxy.stop()
    oa = client(make_proxy(ttl), spec)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)
    assert oa.conversations.retrieve(conversation.id).id == conversation.id


def test_a_streamed_response_in_a_conversation_appends_finished_items(make_proxy, fake_upstream,
                                                                      spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    conversation = oa.conversations.create()
    events = list(oa.responses.create(model=MODEL, input="Streamed into a conversation",
                                      conversation=conversation.id, stream=True))
    final = events[-1].response
    items = list(oa.conversations.items.list(conversation.id, order="asc"))
    assert [i.role for i in items] == ["user", "assistant"]
    assert items[-1].model_dump() == final.output[0].model_dump()
    assert items[-1].status == "completed"


def test_an_expired_response_is_gone_before_the_sweep(make_proxy, fake_upstream, spec):
    """Between sweeps an expired response is already not found, and no chain continues it."""
    proxy = make_proxy({"responses": {"ttl_days": 0.2 / 86400}})  # 0.2 s
    oa = client(proxy, spec)
    response = oa.responses.create(model=MODEL, input="Short-lived")
    time.sleep(0.3)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as info:
        oa.responses.create(model=MODEL, input="next", previous_response_id=response.id)
    assert error_of(info.value)["param"] == "previous_response_id"
