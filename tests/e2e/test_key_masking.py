"""No upstream key reaches a client, whatever the upstream quotes back (issue: "the upstream API
key reaches clients through pass-through").

An upstream (or a gateway) that echoes the key it received — in an error body, compressed or
not, in a header, in the middle of a stream split across chunks — is relayed with the key
masked (same length, `sk-` then asterisks) and every other byte as it was.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests import secrets
from tests.servers import ServerThread

FALLBACK_KEY = "sk-test-fallback-FAKE-5e0b7c3d91"
KEYS = (secrets.UPSTREAM_KEY, FALLBACK_KEY, secrets.USER_OWN_KEY)


def _key(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def _error(key: str) -> dict:
    return {"error": {"message": f"Incorrect API key provided: {key}. Find your key at ...",
                      "type": "invalid_request_error", "param": None,
                      "code": "invalid_api_key"}}


async def _chat(request: Request) -> Response:
    key, mode = _key(request), request.headers.get("x-echo", "json")
    if mode == "fallback" and not request.url.path.startswith("/fb/"):
        return JSONResponse({"error": {"message": "overloaded", "type": "server_error",
                                       "param": None, "code": None}}, status_code=503)
    if mode == "gzip":
        return Response(gzip.compress(json.dumps(_error(key)).encode()), status_code=401,
                        media_type="application/json", headers={"content-encoding": "gzip"})
    if mode == "stream":
        half = len(key) // 2

        async def events() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
            yield b'data: {"error": {"message": "quota of ' + key[:half].encode()
            await asyncio.sleep(0.05)
            yield key[half:].encode() + b' exceeded"}}\n\ndata: [DONE]\n\n'

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-echo-key": key})
    return JSONResponse(_error(key), status_code=401, headers={"x-echo-key": key})


@pytest.fixture
def echoing_upstream() -> Iterator[str]:
    app = Starlette(routes=[
        Route("/v1/chat/completions", _chat, methods=["POST"]),
        Route("/fb/v1/chat/completions", _chat, methods=["POST"]),
        Route("/v1/embeddings", _chat, methods=["POST"]),
    ])
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture
def proxy(make_proxy, echoing_upstream):
    return make_proxy({"upstream": {
        "base_url": f"{echoing_upstream}/v1", "api_key": secrets.UPSTREAM_KEY, "max_retries": 0,
        "fallbacks": [{"base_url": f"{echoing_upstream}/fb/v1", "api_key": FALLBACK_KEY}],
    }})


def _post(proxy, path: str, mode: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}{path}",
                      json={"model": "gpt-4o-mini", "input": "x", "stream": mode == "stream",
                            "messages": [{"role": "user", "content": "hello"}]},
                      headers={"x-echo": mode, "authorization": f"Bearer {secrets.CLIENT_KEY}",
                               **headers}, timeout=30)


def _assert_masked(response: httpx.Response, quoted: str) -> None:
    raw = response.content + json.dumps(dict(response.headers)).encode()
    for key in KEYS:
        assert key.encode() not in raw, f"{key} reached the client"
    masked = quoted[:3] + "*" * (len(quoted) - 3)
    assert masked.encode() in response.content


@pytest.mark.parametrize("mode", ["json", "gzip", "stream"])
def test_pass_through_masks_the_upstream_key(proxy, mode):
    response = _post(proxy, "/chat/completions", mode)
    _assert_masked(response, secrets.UPSTREAM_KEY)
    if mode != "stream":
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "content-encoding" not in response.headers  # decoded to be masked
    else:
        assert response.status_code == 200
        assert response.content.startswith(b'data: {"choices"')
        assert response.content.endswith(b"data: [DONE]\n\n")
    if mode == "json":
        assert response.headers["x-echo-key"] == "sk-" + "*" * (len(secrets.UPSTREAM_KEY) - 3)
        assert int(response.headers["content-length"]) == len(response.content)


def test_a_fallbacks_key_is_masked_too(proxy):
    response = _post(proxy, "/chat/completions", "fallback")
    assert response.headers["x-memproxy-upstream"] == "1"
    _assert_masked(response, FALLBACK_KEY)


def test_embeddings_pass_through_masks_the_key(proxy):
    response = _post(proxy, "/embeddings", "json")
    assert response.status_code == 401
    _assert_masked(response, secrets.UPSTREAM_KEY)


def test_the_memory_path_never_shows_the_key(proxy):
    client = proxy.client()
    with pytest.raises(openai.AuthenticationError) as error:
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hello"}],
                                       extra_headers={"X-Agent-Id": "ada", "x-echo": "json"})
    assert all(key not in str(error.value.body) for key in KEYS)


def test_a_clients_own_key_forwarded_upstream_is_masked(make_proxy, echoing_upstream):
    proxy = make_proxy({"upstream": {"base_url": f"{echoing_upstream}/v1",
                                     "forward_client_key": True, "max_retries": 0}})
    response = _post(proxy, "/chat/completions", "gzip",
                     authorization=f"Bearer {secrets.USER_OWN_KEY}")
    _assert_masked(response, secrets.USER_OWN_KEY)


def test_bodies_that_quote_no_key_are_relayed_byte_for_byte(make_proxy, fake_upstream):
    proxy = make_proxy({"upstream": {"api_key": secrets.UPSTREAM_KEY}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    direct = httpx.post(f"{fake_upstream.url}/chat/completions", json=body)
    relayed = httpx.post(f"{proxy.base_url}/chat/completions", json=body)
    assert relayed.status_code == direct.status_code == 200
    strip = ("id", "created")
    assert ({k: v for k, v in relayed.json().items() if k not in strip}
            == {k: v for k, v in direct.json().items() if k not in strip})
    assert int(relayed.headers["content-length"]) == len(relayed.content)
