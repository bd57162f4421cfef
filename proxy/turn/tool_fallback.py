"""The upstream as a turn's loop calls it, for models that may not take tools.

The loop (core/loop.py) always offers the memory tools. This adapter sits between it and the
upstream client so the loop need not know: for a model known to take no tools it sends the
request as it would be without memory (the client's own tools only, if it sent any), and when
the upstream refuses tools for a model not yet known (`models/tool_support.py`) it remembers the
model and sends the same step again at once without them, with the system prompt switched to
the no-tools one (`on_switch`: instructions without tools, automatic recall), so the client never
sees the refusal. A client that offered its own tools gets the upstream's error as it is: those
tools cannot work with this model, with or without memproxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.loop import Upstream
from ..models.tool_support import rejects_tools, without_tools


class ToolMemory(Protocol):
    """Where the refusal is remembered (`models.catalog.ModelCatalog`)."""

    async def mark_no_tools(self, model: str) -> None: ...


@dataclass
class ToolFallback:
    upstream: Upstream
    catalog: ToolMemory
    model: str
    client_tools: list[dict[str, Any]]  # the tools the client itself sent
    tools: bool = True  # whether this model is offered tools now
    # the system text for the no-tools prompt, made when the turn switches
    on_switch: Callable[[], Awaitable[str]] | None = None
    switched: bool = False

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.tools:
            return body
        return without_tools(body, self.client_tools if body.get("tools") else None)

    async def _fall_back(self, exc: BaseException, body: dict[str, Any]) -> dict[str, Any] | None:
        """The body to send again after `exc`, or None to let `exc` through."""
        if not self.tools or not body.get("tools") or not rejects_tools(exc):
            return None
        await self.catalog.mark_no_tools(self.model)
        self.tools = False
        if self.client_tools:
            return None  # the client's own tools cannot work with this model either
        self.switched = True
        retry = self._body(body)
        if self.on_switch is not None and retry.get("messages"):
            messages = list(retry["messages"])
            if messages[0].get("role") == "system":
                messages[0] = {**messages[0], "content": await self.on_switch()}
                retry["messages"] = messages
        return retry

    async def chat(self, body: dict[str, Any], *, api_key: str | None, route: Any = None
                   ) -> dict[str, Any]:
        try:
            return await self.upstream.chat(self._body(body), api_key=api_key, route=route)
        except Exception as exc:
            retry = await self._fall_back(exc, body)
            if retry is None:
                raise
        return await self.upstream.chat(retry, api_key=api_key, route=route)

    async def chat_stream(self, body: dict[str, Any], *, api_key: str | None, route: Any = None
                          ) -> AsyncIterator[dict[str, Any]]:
        started = False
        stream = self.upstream.chat_stream(self._body(body), api_key=api_key, route=route)
        try:
            async for chunk in stream:
                started = True
                yield chunk
            return
        except Exception as exc:
            retry = None if started else await self._fall_back(exc, body)
            if retry is None:
                raise
        finally:
            await _aclose(stream)
        stream = self.upstream.chat_stream(retry, api_key=api_key, route=route)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await _aclose(stream)


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
