"""Memory writes for models without tools: fact extraction after the turn (`[memory]
extract_facts`, off by default; docs/memory.md). The pure parts are `core/facts.py`.

It runs after the turn is stored, as an observer, and in the background: the client's answer
never waits for it. It asks the summarizer model (`[memory] summarizer_model`, else the turn's
model) for the facts the user stated and appends the new ones to the `human` block, recorded as
a block revision of source `auto` (undoable like any edit). A failure (the model, the store)
is logged and changes nothing: the user's message is in recall memory already, where automatic
recall finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import MemorySettings
from ..core.facts import appended, extraction_request, parse_facts
from ..core.loop import Upstream
from .observers import FinishedTurn

log = logging.getLogger("memproxy.extract")

HUMAN = "human"
SOURCE = "auto"
MAX_TOKENS = 200


@dataclass
class FactExtractor:
    """Runs extractions in the background, one task per turn, shared by the app's turns."""

    store: Any  # TurnStore plus get_block/write_block (the whole Store)
    upstream: Upstream
    settings: MemorySettings
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, turn: FinishedTurn, user_text: str, model: str, api_key: str | None
              ) -> None:
        task = asyncio.create_task(self.extract(turn.agent.pk, turn.turn_id, user_text,
                                                model, api_key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def extract(self, agent_pk: int, turn_id: str, user_text: str, model: str,
                      api_key: str | None) -> None:
        try:
            block = await self.store.get_block(agent_pk, HUMAN)
            if block is None or block.read_only:
                return
            request = {
                "model": self.settings.summarizer_model or model,
                "messages": extraction_request(user_text, block.value),
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
            response = await asyncio.wait_for(self.upstream.chat(request, api_key=api_key),
                                              self.settings.summarizer_timeout_s)
            answer = ((response.get("choices") or [{}])[0].get("message") or {}).get("content")
            if not isinstance(answer, str):
                return
            # Read again: the block may have changed while the model thought.
            block = await self.store.get_block(agent_pk, HUMAN)
            if block is None or block.read_only:
                return
            value = appended(block.value, parse_facts(answer, block.value), block.limit)
            if value != block.value:
                block.value = value
                await self.store.write_block(agent_pk, block, source=SOURCE, turn_id=turn_id)
        except Exception as exc:
            log.warning("fact extraction failed for turn %s (%s); core memory is unchanged and"
                        " the message stays in recall memory", turn_id, type(exc).__name__)

    async def drain(self) -> None:
        """Wait for the running extractions (shutdown, tests)."""
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


@dataclass
class ExtractAfterTurn:
    """The observer for one turn of a model that may be served without tools: when the turn
    ran without tools (`served_with_tools()` is False) and the user said something, extract."""

    extractor: FactExtractor
    user_text: str
    model: str
    api_key: str | None
    served_with_tools: Callable[[], bool]  # the turn's ToolFallback knows

    async def turn_finished(self, turn: FinishedTurn) -> None:
        if self.user_text and not self.served_with_tools():
            self.extractor.start(turn, self.user_text, self.model, self.api_key)

