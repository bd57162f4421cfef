"""schemathesis against the agents REST API's own `GET /openapi.json` (issue #8.3).

One live memproxy per backend, with two tenants (two API keys). Tenant A owns a few agents with
blocks, a conversation and passages; generated path parameters often name them (a hook), so
requests reach real objects instead of 404 every time. Every generated request is sent:

- with tenant B's key first, when it names one of A's agents: B must never get a 2xx there (404
  scoping: another tenant's agent does not exist for B), and its errors are OpenAI-shaped;
- then with tenant A's key, through `case.call_and_validate()` with these checks: no 5xx,
  status codes, content types and bodies as documented (schemathesis's), and the OpenAI error
  shape of every non-2xx answer (ours).

Positive and negative generation (invalid bodies and parameters), derandomized for CI.
schemathesis's pytest plugin (`from_fixture`) does not run under pytest 9 (it sets
`Node._nodeid`), so the test loads the served document itself and drives each operation's
strategy with Hypothesis; `MEMPROXY_FUZZ_API_EXAMPLES` sets the examples per operation and
generation mode.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.openapi_check import validate_error

pytestmark = pytest.mark.slow

KEY_A, KEY_B = "sk-fuzz-tenant-a", "sk-fuzz-tenant-b"
AGENTS_A = ("ta-owned-7f3k", "ta-owned-9q2m")
LABELS = ("human", "persona", "notes")
CONVERSATION = "conv-1"
EXAMPLES = int(os.environ.get("MEMPROXY_FUZZ_API_EXAMPLES") or 25)  # per operation and mode


def _seed(url: str) -> list[int]:
    """Tenant A's agents, a custom block, a conversation and passages; their passage ids."""
    ids: list[int] = []
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {KEY_A}"}) as http:
        for agent in AGENTS_A:
            assert http.post("/v1/agents", json={"id": agent}).status_code == 201
            assert http.put(f"/v1/agents/{agent}/blocks/notes",
                            json={"value": "likes tea"}).status_code == 200
            for text in ("the user likes tea", "a meeting on Monday"):
                created = http.post(f"/v1/agents/{agent}/passages", json={"text": text})
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            chat = http.post("/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]},
                headers={"X-Agent-Id": agent, "X-Conversation-Id": CONVERSATION})
            assert chat.status_code == 200, chat.text
    return ids


@pytest.fixture
def api_server(make_proxy) -> tuple[Any, list[int]]:
    """A memproxy with tenants `ta` and `tb`, and the ids of tenant A's seeded passages."""
    proxy = make_proxy({"auth": {"keys": {KEY_A: "ta", KEY_B: "tb"}}})
    return proxy, _seed(proxy.url)


def load_schema(url: str, passage_ids: list[int]) -> Any:
    """The served document, with a hook that names tenant A's objects in path parameters."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    choices: dict[str, list[Any]] = {"agent": list(AGENTS_A), "label": list(LABELS),
                                     "conversation": [CONVERSATION],
                                     "passage": [str(i) for i in passage_ids]}

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        return st.fixed_dictionaries({
            name: st.sampled_from([value, *choices.get(name, [])])
            for name, value in (path_parameters or {}).items()})

    return schema


def openai_error_shape(ctx: CheckContext, response: Response, case: Any) -> bool | None:
    """Every non-2xx answer is `{"error": {"message", "type", "param", "code"}}`."""
    if 200 <= response.status_code < 300:
        return None
    validate_error(response.json())
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, openai_error_shape]


# Endpoints that create the agent on first use, as the chat endpoint does: tenant B naming
# one of A's ids gets an agent of its own by that id, and A's is untouched.
CREATED_ON_FIRST_USE = {("POST", "/v1/agents/{agent}/messages"),
                        ("POST", "/v1/agents/{agent}/messages/stream")}


def _agent(url: str, agent: str, key: str) -> tuple[int, Any]:
    """The agent as that key sees it (a fuzzed DELETE may have removed it: a 404)."""
    response = httpx.get(f"{url}/v1/agents/{agent}", timeout=30,
                         headers={"Authorization": f"Bearer {key}"})
    return response.status_code, response.json().get("stats", response.json())


# A request whose URL is longer than this is not sent. HTTP servers refuse very long request
# heads before any application sees them (uvicorn's parser: a plain-text 400 "Invalid HTTP
# request received." past ~64 KiB; nginx's default buffers: 8 KiB), so such a case tests the
# HTTP server, not memproxy. Negative generation makes them: Hypothesis mixes string constants
# from the project's own modules (long SQL among them) into generated values, so which cases
# come out depends on the code, not only on the schema and the seed.
MAX_URL = 8192


def _url_length(case: Any, url: str) -> int:
    sent = case.as_transport_kwargs(base_url=url)
    prepared = requests.Request(case.method.upper(), sent["url"],
                                params=sent.get("params")).prepare()
    return len(prepared.url or "")


def check_case(case: Any, seen: dict[str, int], url: str) -> None:
    if _url_length(case, url) > MAX_URL:
        reject()
    agent = (case.path_parameters or {}).get("agent")
    if agent in AGENTS_A:
        seen["cross_tenant"] += 1
        first_use = (case.method.upper(), case.operation.path) in CREATED_ON_FIRST_USE
        before = _agent(url, agent, KEY_A) if first_use else None
        other = case.call(headers={"Authorization": f"Bearer {KEY_B}"})
        if first_use and 200 <= other.status_code < 300:
            assert _agent(url, agent, KEY_A) == before, \
                f"tenant B's turn reached tenant A's agent: {case.formatted_path}"
            # B's own agent of that id goes again, so that B's other probes still find nothing
            assert httpx.delete(f"{url}/v1/agents/{agent}", timeout=30, headers={
                "Authorization": f"Bearer {KEY_B}"}).status_code == 200
        else:
            assert not 200 <= other.status_code < 300, \
                f"tenant B reached tenant A's agent: {case.method} {case.formatted_path}"
            assert other.status_code < 500, other.text
            validate_error(other.json())
    response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY_A}"},
                                      checks=CHECKS)
    seen["ok" if 200 <= response.status_code < 300 else "error"] += 1


def test_agents_api_conforms_to_its_openapi_document(api_server):
    proxy, passage_ids = api_server
    schema = load_schema(proxy.url, passage_ids)
    failures: list[str] = []
    operations = 0
    seen = {"cross_tenant": 0, "ok": 0, "error": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                check_case(case, seen, proxy.url)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # all operations run; listed below
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert operations >= 15, f"the document lists only {operations} operations"
    assert not failures, "\n\n".join(failures)
    # The hook reached tenant A's objects: successes, and B's probes of A's agents, happened.
    assert seen["cross_tenant"] > operations and seen["ok"] > operations, seen
