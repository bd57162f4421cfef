"""`[responses] passthrough`: with no agent named, POST /v1/responses goes to an upstream that
speaks the Responses API itself, unchanged; an agent's responses are still memproxy's."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.servers import ServerThread

UPSTREAM_RESPONSE = {
    "id": "resp_from_upstream", "object": "response", "created_at": 1, "status": "completed",
    "model": "m", "output": [{"type": "message", "id": "msg_u", "status": "completed",
                              "role": "assistant",
                              "content": [{"type": "output_text", "text": "upstream says hi",
                                           "annotations": []}]}],
    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
    "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1,
    "top_p": 1,
}


@pytest.fixture
def responses_upstream():
    seen: list[tuple[str, dict]] = []

    async def responses(request: Request):
        seen.append(("/v1/responses", json.loads(await request.body())))
        return JSONResponse(UPSTREAM_RESPONSE)

    async def chat(request: Request):
        body = json.loads(await request.body())
        seen.append(("/v1/chat/completions", body))
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "memproxy answered"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    app = Starlette(routes=[Route("/v1/responses", responses, methods=["POST"]),
                            Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server, seen


def test_no_agent_is_relayed_and_an_agent_is_served(make_proxy, responses_upstream):
    server, seen = responses_upstream
    proxy = make_proxy({"upstream": {"base_url": f"{server.url}/v1"},
                        "responses": {"passthrough": True}})
    relayed = proxy.client().responses.create(model="m", input="hi", store=True)
    assert relayed.id == "resp_from_upstream" and relayed.output_text == "upstream says hi"
    assert seen[-1] == ("/v1/responses", {"model": "m", "input": "hi", "store": True})
    agent = proxy.client(base_url=f"{proxy.url}/agents/pat/v1")
    served = agent.responses.create(model="m", input="hello")
    assert served.output_text == "memproxy answered" and served.id != "resp_from_upstream"
    assert seen[-1][0] == "/v1/chat/completions"
    # what was relayed is the upstream's: memproxy stored nothing of it
    assert proxy.http().get("/v1/responses/resp_from_upstream").status_code == 404
