"""Which agent and conversation a request belongs to (docs/design.md §3.2), as a pure function.

First match wins: the URL path, then `X-Agent-Id` / `X-Conversation-Id` and the configured
client headers (Open WebUI's and others'), then the body's `user` when enabled. No agent means
pass-through, unless `require_agent` is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import IdentitySettings
from ..errors import bad_request

DEFAULT_CONVERSATION = "default"
MAX_ID_LENGTH = 200

# Letters, digits and a few separators; no slashes, whitespace, quotes or control characters,
# so an id is safe in URLs, logs and file names. Unicode letters are allowed (\w).
_ID_RE = re.compile(r"^[\w.@:+=~-]+$")


@dataclass(frozen=True)
class Identity:
    agent_id: str
    conversation_id: str | None
    source: str  # "path", "header", "user"
    history_client: bool = False  # named by a chat UI's header: it resends whole histories
    ephemeral: bool = False  # a temporary chat: memory read-only, nothing stored (turn/ephemeral)


def validate_id(value: str, what: str) -> str:
    """Return the id unchanged if it is acceptable, else raise a 400 naming the field."""
    if not value or len(value) > MAX_ID_LENGTH or not _ID_RE.match(value) or value in (".", ".."):
        raise bad_request(
            f"invalid {what} {value[:60]!r}: use 1-{MAX_ID_LENGTH} letters, digits or . _ - @ : + = ~",
            param=what,
            code="invalid_id",
        )
    return value


def _first_header(headers: Mapping[str, str], names: list[str]) -> str | None:
    for name in names:
        value = headers.get(name.lower())
        if value is not None and value.strip():
            return value.strip()
    return None


def memory_disabled(headers: Mapping[str, str]) -> bool:
    return headers.get("x-memory", "").strip().lower() in ("off", "false", "0", "no")


def memory_ephemeral(headers: Mapping[str, str], conversation: str | None,
                     prefixes: Sequence[str]) -> bool:
    """A temporary chat: `X-Memory: ephemeral`, or a conversation id with one of the
    configured prefixes (Open WebUI's `temporary:<id>`, `local:<id>`)."""
    if headers.get("x-memory", "").strip().lower() == "ephemeral":
        return True
    return conversation is not None and conversation.startswith(tuple(prefixes))


def resolve_identity(
    path_params: Mapping[str, str],
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    settings: IdentitySettings,
) -> Identity | None:
    """The request's agent and conversation, or None for pass-through.

    `headers` must have lower-case keys (Starlette's `Headers` does). Raises a 400 ProxyError
    for malformed ids and, with `require_agent`, for requests that name no agent.
    """
    if memory_disabled(headers):
        return None
    agent = path_params.get("agent")
    conversation = path_params.get("conversation")
    source = "path"
    if agent is None:
        agent = _first_header(headers, settings.agent_headers)
        source = "header"
    history_client = False
    if conversation is None:
        conversation = _first_header(headers, settings.conversation_headers)
        history_client = conversation is not None and any(
            headers.get(h.lower()) for h in settings.history_client_headers
        )
    if agent is None and settings.agent_from_user:
        user = body.get("user")
        if isinstance(user, str) and user.strip():
            agent = user.strip()
            source = "user"
    if agent is None:
        if settings.require_agent:
            raise bad_request(
                "no agent given: use the path /agents/{agent}/v1/..., the X-Agent-Id header"
                " or the body's `user` field",
                param="agent",
                code="agent_required",
            )
        return None
    validate_id(agent, "agent_id")
    if conversation is not None:
        validate_id(conversation, "conversation_id")
    return Identity(agent_id=agent, conversation_id=conversation, source=source,
                    history_client=history_client,
                    ephemeral=memory_ephemeral(headers, conversation,
                                               settings.ephemeral_conversation_prefixes))


def is_auxiliary(messages: list[Any], patterns: Sequence[re.Pattern[str]],
                 system_patterns: Sequence[re.Pattern[str]] = ()) -> bool:
    """A chat UI's side request (title, tags, follow-ups, emoji, merge, tool choice...).

    Side requests are one-shot: their prompt carries whatever history they need as text, so a
    request with an assistant or tool message is a conversation and never one of them (a user
    who types a task-like message in the middle of a chat keeps their memory). Otherwise the
    last user message is matched against `patterns` and each system or developer message
    against `system_patterns` (some UIs put the side prompt there, with no user message at
    all)."""
    from .messages import content_text

    last_user: str | None = None
    systems: list[str] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("assistant", "tool", "function"):
            return False
        if role == "user":
            last_user = content_text(message.get("content"))
        elif role in ("system", "developer") and system_patterns:
            systems.append(content_text(message.get("content")))
    if last_user is not None and any(p.search(last_user) for p in patterns):
        return True
    return any(p.search(text) for text in systems for p in system_patterns)


def memory_model(model: Any, suffix: str) -> str | None:
    """A/B mode (`[ab] expose_raw_models`): the upstream model a `NAME<suffix>` request is for,
    or None when the request names a raw model (pass-through, no memory) or no model at all."""
    if isinstance(model, str) and model.endswith(suffix) and len(model) > len(suffix):
        return model[: -len(suffix)]
    return None
