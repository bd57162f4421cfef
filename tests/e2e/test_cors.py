"""CORS: off by default (no Access-Control headers, preflights refused as before); with
`[server] cors_origins` browsers on those origins may call the API and read memproxy's headers."""

from __future__ import annotations

import httpx
import pytest

from tests import secrets
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
APP = "https://chat.example.com"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
BROWSER_HEADERS = "authorization, content-type, x-agent-id, x-conversation-id, x-memory"


def preflight(proxy, path: str = "/v1/chat/completions", *, origin: str = APP,
              method: str = "POST", headers: str = BROWSER_HEADERS) -> httpx.Response:
    return httpx.options(f"{proxy.url}{path}", headers={
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": headers,
    })


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def listed(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


def test_off_by_default(make_proxy, fake_upstream):
    proxy = make_proxy()
    refused = preflight(proxy)
    assert refused.status_code == 405
    validate_error(refused.json())
    assert cors_headers(refused) == {}
    answer = httpx.post(f"{proxy.base_url}/chat/completions", json=BODY,
                        headers={"origin": APP, "x-agent-id": "a"})
    assert answer.status_code == 200 and cors_headers(answer) == {}


def test_listed_origins_may_call_and_read_memproxys_headers(make_proxy, fake_upstream):
    proxy = make_proxy({"server": {"cors_origins": [APP]}})
    allowed = preflight(proxy)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert listed(BROWSER_HEADERS) <= listed(allowed.headers["access-control-allow-headers"])
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers  # keys, not cookies
    for stream in (False, True):
        answer = httpx.post(f"{proxy.base_url}/chat/completions", json={**BODY, "stream": stream},
                            headers={"origin": APP, "x-agent-id": "a"})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        exposed = listed(answer.headers["access-control-expose-headers"])
        assert {"x-request-id", "x-memproxy-agent-id", "x-memproxy-conversation-id",
                "x-memproxy-steps", "x-memproxy-overhead-ms"} <= exposed
        assert answer.headers["x-memproxy-agent-id"] == "a"


def test_the_agents_api_and_the_sdks_own_headers_are_allowed(make_proxy, fake_upstream):
    proxy = make_proxy({"server": {"cors_origins": [APP]}})
    for method in ("GET", "PATCH", "DELETE", "PUT"):
        assert preflight(proxy, "/v1/agents/a", method=method,
                         headers="authorization").status_code == 200
    sdk = "x-stainless-os, x-stainless-lang, x-stainless-retry-count, x-stainless-timeout"
    assert preflight(proxy, headers=f"{BROWSER_HEADERS}, {sdk}").status_code == 200
    # identity headers named in the configuration are allowed as well
    assert preflight(proxy, headers="x-openwebui-user-id, x-openwebui-chat-id"
                     ).status_code == 200


@pytest.mark.parametrize("origin, headers, reason", [
    ("https://evil.example", BROWSER_HEADERS, "origin"),
    (APP, "authorization, x-something-else", "headers"),
])
def test_other_origins_and_headers_are_refused_in_the_openai_shape(make_proxy, fake_upstream,
                                                                   origin, headers, reason):
    proxy = make_proxy({"server": {"cors_origins": [APP]}})
    refused = preflight(proxy, origin=origin, headers=headers)
    assert refused.status_code == 400
    validate_error(refused.json())
    assert refused.json()["error"]["code"] == "cors_rejected"
    assert reason in refused.json()["error"]["message"]
    if reason == "origin":
        assert "access-control-allow-origin" not in refused.headers
        answer = httpx.post(f"{proxy.base_url}/chat/completions", json=BODY,
                            headers={"origin": origin})
        assert "access-control-allow-origin" not in answer.headers


def test_any_origin(make_proxy, fake_upstream):
    proxy = make_proxy({"server": {"cors_origins": ["*"]}})
    assert preflight(proxy, origin="https://anywhere.example").headers[
        "access-control-allow-origin"] == "*"
    answer = httpx.get(f"{proxy.base_url}/models", headers={"origin": "https://x.example"})
    assert answer.headers["access-control-allow-origin"] == "*"


def test_errors_are_readable_by_the_browser_too(make_proxy, fake_upstream):
    proxy = make_proxy({"server": {"cors_origins": [APP]},
                        "auth": {"keys": {secrets.TENANT_A_KEY: "a"}},
                        "limits": {"requests_per_minute": 1}})
    unauthorized = httpx.post(f"{proxy.base_url}/chat/completions", json=BODY,
                              headers={"origin": APP})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == APP
    auth = {"origin": APP, "authorization": f"Bearer {secrets.TENANT_A_KEY}"}
    assert httpx.post(f"{proxy.base_url}/chat/completions", json=BODY,
                      headers=auth).status_code == 200
    limited = httpx.post(f"{proxy.base_url}/chat/completions", json=BODY, headers=auth)
    assert limited.status_code == 429
    assert limited.headers["access-control-allow-origin"] == APP
    assert "retry-after" in listed(limited.headers["access-control-expose-headers"])
