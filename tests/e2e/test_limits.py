"""Input limits (issue 8): oversized, deep, malformed or unknown input gets a clear OpenAI-style
error before anything is stored or forwarded; unknown fields pass through untouched."""

from __future__ import annotations

import json

import httpx
import pytest

from tests import storage
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
AGENT = {"x-agent-id": "lim", "content-type": "application/json"}
SMALL = {"limits": {"max_body_bytes": 4096, "max_messages": 5, "max_message_chars": 300}}


def post(proxy, raw, headers=AGENT):
    return httpx.post(f"{proxy.base_url}/chat/completions", content=raw, headers=headers,
                      timeout=30)


def body(**kw):
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       **kw}).encode()


@pytest.mark.parametrize("raw, status, code", [
    (body(messages=[{"role": "user", "content": "x" * 5000}]), 413, "request_too_large"),
    (body(messages=[{"role": "user", "content": "x" * 301}]), 400, "message_too_long"),
    (body(messages=[{"role": "user", "content": "hi"}] * 6), 400, "too_many_messages"),
    (b'{"model": "m", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "invalid_json"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
     400, "invalid_json"),
    # a lone surrogate (issue #21.6): as a JSON escape, and as raw CESU-8 bytes
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
     400, "invalid_json"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
     400, "invalid_json"),
])
def test_limits(make_proxy, fake_upstream, raw, status, code):
    proxy = make_proxy(SMALL)
    response = post(proxy, raw)
    assert response.status_code == status
    validate_error(response.json())
    assert response.json()["error"]["code"] == code
    assert fake_upstream.requests == []
    assert storage.transcript(proxy.settings.database.url, "lim") == []


@pytest.mark.parametrize("raw", [b'{"value": "a\\udfffb"}', b'{"value": "\xed\xb0\x80"}',
                                 b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_a_block_put_that_is_no_text_or_too_deep_is_a_400(make_proxy, raw):
    proxy = make_proxy()
    with proxy.http() as http:
        assert http.post("/v1/agents", json={"id": "lim"}).status_code == 201
        before = http.get("/v1/agents/lim/blocks").json()
        response = http.put("/v1/agents/lim/blocks/notes", content=raw,
                            headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        validate_error(response.json())
        assert response.json()["error"]["code"] == "invalid_json"
        assert http.get("/v1/agents/lim/blocks").json() == before


def test_pass_through_bodies_have_the_size_limit_too(make_proxy, fake_upstream):
    proxy = make_proxy(SMALL)
    response = post(proxy, body(messages=[{"role": "user", "content": "x" * 5000}]),
                    {"content-type": "application/json"})
    assert response.status_code == 413
    validate_error(response.json())
    assert fake_upstream.requests == []


def test_an_oversized_body_without_content_length_is_refused(make_proxy, fake_upstream):
    proxy = make_proxy(SMALL)

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = httpx.post(f"{proxy.base_url}/chat/completions", content=chunks(), headers=AGENT)
    assert response.status_code == 413
    assert fake_upstream.requests == []


def test_unknown_fields_reach_the_upstream_untouched(make_proxy, fake_upstream):
    proxy = make_proxy()
    extra = {"temperature": 0.3, "top_p": 0.9, "seed": 7, "logit_bias": {"50256": -100},
             "vendor_extension": {"nested": [1, 2, {"deep": True}]}, "user": "u-1",
             "metadata": {"k": "v"}}
    response = post(proxy, body(**extra))
    assert response.status_code == 200
    sent = fake_upstream.last.json
    for key, value in extra.items():
        assert sent[key] == value


@pytest.mark.parametrize("name", ["Idempotency-Key", "OpenAI-Organization", "X-Request-Id",
                                  "X-Custom"])
def test_header_bytes_no_text_holds_never_make_a_500(make_proxy, fake_upstream, name):
    """Issue #21.6: a header holding a UTF-8-encoded surrogate or latin-1 bytes made the
    pass-through a 500 (httpx refuses such text); it goes on as the client's very bytes, and
    the stateful path answers too."""
    proxy = make_proxy()
    for value in (b"a\xed\xa0\x80b", b"caf\xe9"):
        for headers in ({}, {"x-agent-id": "hdr"}):
            response = post(proxy, body(), {**AGENT, **headers, name: value}
                            if headers else {"content-type": "application/json", name: value})
            assert response.status_code == 200, response.text
    passed = [r for r in fake_upstream.requests if r.headers.get(name.lower())]
    if name not in ("X-Request-Id",):  # a request id that is no sane id is replaced
        assert any(r.headers.get(name.lower()) == "a\xed\xa0\x80b" for r in passed)
