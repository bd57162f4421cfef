"""One tenant's agents never reach another tenant's prompts or responses (invariant 4)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests import secrets
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
KEYS = {"auth": {"keys": {secrets.TENANT_A_KEY: "tenant-a", secrets.TENANT_B_KEY: "tenant-b"}}}


@pytest.fixture
def two_tenants(make_proxy, fake_upstream):
    proxy = make_proxy(KEYS)
    proxy.client(api_key=secrets.TENANT_A_KEY).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}],
        extra_headers={"X-Agent-Id": "alice", "X-Conversation-Id": "secret-chat"})
    return proxy


@pytest.mark.parametrize("agent", ["alice", "../alice", "alice%2F..", "alice'", "ālice", "%00"])
def test_another_tenants_context_is_not_found(two_tenants, agent):
    response = httpx.get(f"{two_tenants.base_url}/agents/{agent}/context",
                         params={"conversation": "secret-chat"},
                         headers={"authorization": f"Bearer {secrets.TENANT_B_KEY}"})
    assert response.status_code in (400, 404)
    validate_error(response.json())
    assert "Ada" not in response.text and "secret" not in response.text.replace(
        "secret-chat", "")


def test_the_owner_sees_it(two_tenants):
    response = httpx.get(f"{two_tenants.base_url}/agents/alice/context",
                         params={"conversation": "secret-chat"},
                         headers={"authorization": f"Bearer {secrets.TENANT_A_KEY}"})
    assert response.status_code == 200 and response.json()["messages_in_context"] == 4


def test_same_agent_and_conversation_ids_in_another_tenant_start_empty(two_tenants,
                                                                      fake_upstream):
    reply = two_tenants.client(api_key=secrets.TENANT_B_KEY).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is my name?"}],
        extra_headers={"X-Agent-Id": "alice", "X-Conversation-Id": "secret-chat"})
    assert reply.choices[0].message.content == "I don't know your name."
    sent = json.dumps(fake_upstream.last.json)
    assert "Ada" not in sent and "My name is" not in sent
