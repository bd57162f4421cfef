"""The checker under the Responses e2e tests (tests/responses_check.py) really checks: a valid
answer and stream pass, and a wrong object, a wrong event, a mislabelled SSE frame, a sequence
number going backwards and a malformed error are each reported."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.responses_check import SpecLog, schema_for

RESPONSE = {
    "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
    "model": "m", "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
    "tools": [], "error": None, "incomplete_details": None, "instructions": None,
    "metadata": {}, "temperature": 1.0, "top_p": 1.0,
}


def sse(*events: dict, names: list[str] | None = None) -> bytes:
    out = b""
    for i, event in enumerate(events):
        name = names[i] if names else event["type"]
        out += f"event: {name}\ndata: {json.dumps(event)}\n\n".encode()
    return out


def serve(body: bytes, status: int = 200, content_type: str = "application/json"):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})
    return httpx.MockTransport(handler)


def fetch(log: SpecLog, transport: httpx.MockTransport, method: str, path: str) -> bytes:
    with httpx.Client(transport=log.transport(transport)) as http:
        with http.stream(method, f"http://x{path}") as response:
            return response.read()


def test_routes_name_the_schemas():
    assert schema_for("POST", "/agents/a/v1/responses") == (True, "Response")
    assert schema_for("GET", "/v1/responses/resp_1/input_items") == (True, "ResponseItemList")
    assert schema_for("DELETE", "/v1/conversations/c/items/i") == (True, "ConversationResource")
    assert schema_for("POST", "/v1/chat/completions") == (False, None)


def test_valid_answers_pass_and_reach_the_client_unchanged():
    log = SpecLog()
    body = json.dumps(RESPONSE).encode()
    assert fetch(log, serve(body), "GET", "/v1/responses/resp_1") == body
    created = {"type": "response.created", "sequence_number": 0,
               "response": {**RESPONSE, "status": "in_progress"}}
    done = {"type": "response.completed", "sequence_number": 1, "response": RESPONSE}
    stream = sse(created, done)
    assert fetch(log, serve(stream, content_type="text/event-stream"), "POST",
                 "/v1/responses") == stream
    log.assert_valid()
    assert len(log.checked("Response")) == 1 and log.streams[0].types == [
        "response.created", "response.completed"]


@pytest.mark.parametrize("case", ["object", "event", "label", "sequence", "error"])
def test_problems_are_reported(case):
    log = SpecLog()
    created = {"type": "response.created", "sequence_number": 3,
               "response": {**RESPONSE, "status": "in_progress"}}
    if case == "object":
        fetch(log, serve(json.dumps({**RESPONSE, "status": "done"}).encode()), "POST",
              "/v1/responses")
    elif case == "error":
        fetch(log, serve(b'{"error": "nope"}', status=404), "GET", "/v1/responses/resp_1")
    else:
        second = {"type": "response.completed", "sequence_number": 4, "response": RESPONSE}
        names = None
        if case == "event":
            second = {"type": "response.output_text.delta", "sequence_number": 4}
        elif case == "label":
            names = ["response.created", "response.failed"]
        elif case == "sequence":
            second["sequence_number"] = 3
        fetch(log, serve(sse(created, second, names=names), content_type="text/event-stream"),
              "POST", "/v1/responses")
    with pytest.raises(AssertionError):
        log.assert_valid()


def test_an_empty_list_may_have_null_ids_but_a_full_one_may_not():
    log = SpecLog()
    empty = {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    fetch(log, serve(json.dumps(empty).encode()), "GET", "/v1/conversations/c/items")
    log.assert_valid()
    item = {"type": "message", "id": "msg_1", "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": "hi"}]}
    full = {**empty, "data": [item]}
    fetch(log, serve(json.dumps(full).encode()), "GET", "/v1/conversations/c/items")
    with pytest.raises(AssertionError):
        log.assert_valid()
