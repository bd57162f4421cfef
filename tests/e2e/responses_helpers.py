"""Shared pieces of the Responses API end-to-end tests (issue #16): clients whose every answer
is validated against the OpenAI description (tests/responses_check.py), and views of what the
scripted upstream (tests/fakes) was sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests import secrets
from tests.fakes import message_text
from tests.responses_check import SpecLog

MODEL = "gpt-4o-mini"
TOOL = {
    "type": "function",
    "name": "lookup_order",
    "description": "The status of an order.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
}
TOOL_PROMPT = 'Use tool lookup_order with {"order_id": "A17"}'
TWO_TENANTS = {"auth": {"keys": {secrets.TENANT_A_KEY: "tenant-a",
                                 secrets.TENANT_B_KEY: "tenant-b"}}}


@pytest.fixture
def spec() -> Iterator[SpecLog]:
    """Validates every Responses/Conversations answer the test's clients receive; the test
    fails at teardown if one did not follow the OpenAI description."""
    log = SpecLog()
    yield log
    log.assert_valid()


def client(proxy: Any, spec: SpecLog, *, base_url: str | None = None,
           api_key: str = secrets.CLIENT_KEY) -> openai.OpenAI:
    """openai-python on memproxy (no retries), its answers checked by `spec`."""
    return openai.OpenAI(base_url=base_url or proxy.base_url, api_key=api_key, max_retries=0,
                         timeout=30.0, http_client=spec.http_client(timeout=30.0))


def agent_url(proxy: Any, agent: str) -> str:
    return f"{proxy.url}/agents/{agent}/v1"


def chat(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each message of an upstream chat request."""
    return [(m["role"], message_text(m)) for m in body["messages"]]


def dialogue(body: dict[str, Any]) -> list[tuple[str, str]]:
    """`chat` without system/developer messages."""
    return [(r, t) for r, t in chat(body) if r not in ("system", "developer")]


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(t for r, t in chat(body) if r in ("system", "developer"))


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped error answer."""
    body = exc.body
    assert isinstance(body, dict), body
    return body.get("error", body) if isinstance(body.get("error"), dict) else body


def poll(oa: openai.OpenAI, response_id: str, until: tuple[str, ...] = (
        "completed", "failed", "incomplete", "cancelled"), deadline_s: float = 30.0) -> Any:
    """Retrieve the response until its status is one of `until` (a background response)."""
    stop = time.monotonic() + deadline_s
    while True:
        response = oa.responses.retrieve(response_id)
        if response.status in until:
            return response
        assert time.monotonic() < stop, (
            f"{response_id} still {response.status!r} after {deadline_s} s")
        time.sleep(0.05)


def echo(text: str, users: int) -> str:
    """The scripted model's answer to a plain message, having seen `users` user messages."""
    return f"Echo: {text} (saw {users} user messages)"
