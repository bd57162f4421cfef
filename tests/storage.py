"""Reading what memproxy stored, through the real store, for assertions in tests."""

from __future__ import annotations

from typing import Any

from proxy.core.types import Block, StoredMessage, Turn
from proxy.store import open_store
from tests.store_backends import run_with_store


def _run(url: str, work) -> Any:
    return run_with_store(open_store(url), work)


def transcript(url: str, agent: str, conversation: str = "default", tenant: str = "default",
               *, visible_only: bool = True, include_superseded: bool = False
               ) -> list[StoredMessage]:
    async def work(store):
        found = await store.get_agent(tenant, agent)
        if found is None:
            return []
        conv = await store.ensure_conversation(found.pk, conversation)
        rows = await store.list_messages(conv.pk, limit=100_000,
                                         include_superseded=include_superseded)
        return [m for m in rows if m.visible or not visible_only]

    return _run(url, work)


def blocks(url: str, agent: str, tenant: str = "default") -> dict[str, Block]:
    async def work(store):
        found = await store.get_agent(tenant, agent)
        return {} if found is None else {b.label: b for b in await store.get_blocks(found.pk)}

    return _run(url, work)


def last_turn(url: str, agent: str, conversation: str = "default",
              tenant: str = "default") -> Turn | None:
    async def work(store):
        found = await store.get_agent(tenant, agent)
        if found is None:
            return None
        conv = await store.ensure_conversation(found.pk, conversation)
        return await store.last_turn(conv.pk)

    return _run(url, work)


def roles_and_texts(messages: list[StoredMessage]) -> list[tuple[str, str]]:
    from proxy.core.messages import content_text

    return [(m.role, content_text(m.data.get("content"))) for m in messages]


def summary_state(url: str, agent: str, conversation: str = "default",
                  tenant: str = "default") -> tuple[str, Any]:
    """The conversation's summary and its background summary job (None when none is queued)."""
    async def work(store):
        found = await store.get_agent(tenant, agent)
        if found is None:
            return "", None
        conv = await store.ensure_conversation(found.pk, conversation)
        return conv.summary, await store.get_summary_job(conv.pk)

    return _run(url, work)
