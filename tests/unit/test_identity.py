"""Choosing the agent and conversation (docs/design.md §3.2)."""

from __future__ import annotations

import pytest

from proxy.config import IdentitySettings
from proxy.core.identity import resolve_identity, validate_id
from proxy.errors import ProxyError

S = IdentitySettings()


def resolve(path=None, headers=None, body=None, settings=S):
    return resolve_identity(path or {}, {k.lower(): v for k, v in (headers or {}).items()},
                            body or {}, settings)


def test_no_identity_is_pass_through():
    assert resolve() is None


def test_path_wins_over_headers():
    ident = resolve({"agent": "p", "conversation": "c"}, {"X-Agent-Id": "h"})
    assert (ident.agent_id, ident.conversation_id, ident.source) == ("p", "c", "path")


def test_headers_give_agent_and_conversation():
    ident = resolve(headers={"X-Agent-Id": "a1", "X-Conversation-Id": "chat-7"})
    assert (ident.agent_id, ident.conversation_id, ident.source) == ("a1", "chat-7", "header")


def test_open_webui_headers_are_recognised_by_default():
    ident = resolve(headers={"X-OpenWebUI-User-Id": "u-1", "X-OpenWebUI-Chat-Id": "c-1"})
    assert (ident.agent_id, ident.conversation_id) == ("u-1", "c-1")


def test_user_field_only_when_enabled():
    assert resolve(body={"user": "alice"}) is None
    ident = resolve(body={"user": "alice"}, settings=IdentitySettings(agent_from_user=True))
    assert (ident.agent_id, ident.source) == ("alice", "user")


def test_user_field_must_be_a_string():
    assert resolve(body={"user": 5}, settings=IdentitySettings(agent_from_user=True)) is None


def test_memory_off_header_forces_pass_through():
    assert resolve({"agent": "p"}, {"X-Memory": "off"}) is None


def test_require_agent_rejects_anonymous_requests():
    with pytest.raises(ProxyError) as err:
        resolve(settings=IdentitySettings(require_agent=True))
    assert err.value.status == 400 and err.value.code == "agent_required"


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "a b", "x" * 201, "a\nb", 'q"', "%2F", "a\\b"])
def test_malformed_ids_are_rejected(bad):
    with pytest.raises(ProxyError) as err:
        validate_id(bad, "agent_id")
    assert err.value.status == 400


@pytest.mark.parametrize("good", ["alice", "user@example.com", "7f3e-uuid", "Zoë", "a.b:c+d=e~f"])
def test_reasonable_ids_are_accepted(good):
    assert validate_id(good, "agent_id") == good
