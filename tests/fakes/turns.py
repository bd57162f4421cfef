"""A stateful turn driven in-process, as the HTTP layer drives it (proxy/api/chat.py): build a
`TurnRequest`, `StatefulService.start` it, iterate the session's events to the end.

`TurnHarness` wires the service to an `InMemoryTurnStore` and an `InProcessUpstream`, so a turn
needs no database, no network and no server; tests assert on what the store holds and on what
the upstream received.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.api.auth import Caller
from proxy.config import ModelSettings, Settings
from proxy.core.identity import Identity
from proxy.core.types import Conversation, Message, StoredMessage
from proxy.turn import Replay, StatefulService, TurnRequest, TurnSession

from .in_process_upstream import InProcessUpstream
from .scripted_model import Reply, scripted_model
from .store import InMemoryTurnStore

MODEL = "test-model"
TENANT = "tenant-1"
AGENT = "agent-1"


def turn_settings(window: int = 100_000, **agent: Any) -> Settings:
    """Settings with `MODEL`'s window and short instructions (a small, predictable prompt);
    `agent` sets `[agent]` keys such as `lock_timeout_s`."""
    settings = Settings(models={MODEL: ModelSettings(context_window=window)})
    settings.agent.base_instructions = "You are a test agent with memory."
    for key, value in agent.items():
        setattr(settings.agent, key, value)
    return settings


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def numbered_replies(upstream: InProcessUpstream) -> Callable[[dict[str, Any]], Reply]:
    """A responder whose every answer differs: "reply N" for the Nth call of the turn."""
    return lambda body: Reply(content=f"reply {len(upstream.requests)}")


@dataclass
class TurnHarness:
    settings: Settings
    store: InMemoryTurnStore
    upstream: InProcessUpstream
    service: StatefulService

    @classmethod
    def create(cls, settings: Settings | None = None, *,
               responder: Callable[[dict[str, Any]], Reply] = scripted_model,
               store: InMemoryTurnStore | None = None, **upstream: Any) -> TurnHarness:
        settings = settings or turn_settings()
        store = store if store is not None else InMemoryTurnStore()
        client = InProcessUpstream(responder, **upstream)
        return cls(settings, store, client, StatefulService(settings, store, client))

    def request(self, messages: list[Message], *, agent: str = AGENT,
                conversation: str | None = None, history_client: bool = False,
                idempotency_key: str | None = None, retry: bool = False,
                **body: Any) -> TurnRequest:
        return TurnRequest(
            caller=Caller(TENANT),
            identity=Identity(agent, conversation, "header", history_client=history_client),
            body={"model": MODEL, "messages": [dict(m) for m in messages], **body},
            started=time.perf_counter(),
            idempotency_key=idempotency_key,
            retry=retry,
        )

    async def start(self, messages: list[Message], **options: Any) -> TurnSession | Replay:
        return await self.service.start(self.request(messages, **options), api_key=None)

    async def turn(self, messages: list[Message], **options: Any) -> TurnSession:
        """One whole turn, its events consumed as `_complete` consumes them."""
        session = await self.start(messages, **options)
        assert isinstance(session, TurnSession), session
        await drain(session)
        return session

    # --- reading the store ----------------------------------------------------------------
    def conversation(self, conversation_id: str = "default") -> Conversation:
        return next(c for c in self.store.conversations.values()
                    if c.conversation_id == conversation_id)

    def rows(self, conversation_id: str = "default") -> list[StoredMessage]:
        """Every stored message of the conversation, superseded ones included."""
        return self.store.messages[self.conversation(conversation_id).pk]

    def visible(self, conversation_id: str = "default") -> list[Message]:
        """What the client has seen: the visible, non-superseded messages."""
        return [m.data for m in self.rows(conversation_id) if m.visible and not m.superseded]


async def drain(session: TurnSession) -> list[Any]:
    return [event async for event in session.events()]


def reply_text(session: TurnSession) -> str:
    assert session.response is not None
    return str(session.response["choices"][0]["message"]["content"])
