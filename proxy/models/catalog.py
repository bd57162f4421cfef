"""What memproxy knows about each model: its context window and its token calibration.

Windows come from config, the upstream's `/v1/models` metadata, a built-in table or the
default (`windows.context_window`). The upstream listing is fetched once, then refreshed in
the background when stale, so a request never waits for it after the first.

The calibration factor (upstream-reported prompt tokens / local estimate) is learned from every
upstream response and persisted per model in the store, so it survives restarts. So is a model's
refusal of tools (`tool_support.py`): once an upstream said a model does not take tools, no later
request, in this process or after a restart, offers it any.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import Settings
from ..store.base import ModelStatsStore
from ..tokens import Calibration
from ..upstream import UpstreamClient
from .tool_support import configured_tools
from .windows import configured_window, context_window, parse_upstream_windows

log = logging.getLogger("memproxy.catalog")

FIRST_FETCH_TIMEOUT_S = 3.0
FLUSH_EVERY_SECONDS = 30.0


class ModelCatalog:
    def __init__(self, settings: Settings, store: ModelStatsStore,
                 upstream: UpstreamClient) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.calibration = Calibration()
        self._loaded: set[str] = set()
        self._no_tools: set[str] = set()  # models the upstream said take no tools
        self._dirty: set[str] = set()
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None  # flush_soon's, off the request path
        self._windows: dict[str, int] | None = None
        self._windows_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    # --- context windows ------------------------------------------------------------------
    async def window(self, model: str, api_key: str | None) -> int:
        if configured_window(model, self.settings) is not None:
            return context_window(model, self.settings)
        return context_window(model, self.settings, await self._upstream_windows(api_key))

    async def _upstream_windows(self, api_key: str | None) -> dict[str, int] | None:
        age = time.monotonic() - self._windows_at
        if self._windows is None:
            try:
                await asyncio.wait_for(self._fetch(api_key), FIRST_FETCH_TIMEOUT_S)
            except Exception as exc:  # no listing: the table and the default still answer
                log.info("could not read the upstream's model list: %s", type(exc).__name__)
                self._windows, self._windows_at = {}, time.monotonic()
        elif age > self.settings.upstream.models_cache_s and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh(api_key))
        return self._windows

    async def _fetch(self, api_key: str | None) -> None:
        listing = await self.upstream.list_models(api_key=api_key)
        self._windows, self._windows_at = parse_upstream_windows(listing), time.monotonic()

    async def _refresh(self, api_key: str | None) -> None:
        try:
            await self._fetch(api_key)
        except Exception as exc:
            log.info("model list refresh failed: %s", type(exc).__name__)
            self._windows_at = time.monotonic()
        finally:
            self._refreshing = None

    # --- calibration ----------------------------------------------------------------------
    async def _load(self, model: str) -> None:
        """What the store keeps of `model` (calibration, tool support), read once."""
        if model in self._loaded:
            return
        self._loaded.add(model)
        try:
            stored = await self.store.get_model_stats(model)
        except Exception:
            log.exception("could not load the stats of a model")
            stored = None
        if stored and stored.get("tools") is False:
            self._no_tools.add(model)
        if stored and "calibration" in stored:
            restored = Calibration.from_dict({"models": {model: stored["calibration"]}})
            if restored.samples(model) and not self.calibration.samples(model):
                self.calibration = _merged(self.calibration, restored, model)

    async def factor(self, model: str) -> float:
        await self._load(model)
        return self.calibration.factor(model)

    # --- tool support ---------------------------------------------------------------------
    async def tools_supported(self, model: str) -> bool:
        """Whether requests for `model` may offer tools: `[models."x"] tools` when set, else
        unless the upstream refused them for this model before (persisted)."""
        configured = configured_tools(model, self.settings)
        if configured is not None:
            return configured
        await self._load(model)
        return model not in self._no_tools

    async def mark_no_tools(self, model: str) -> None:
        """Remember that the upstream refused tools for `model`, in the store at once (a
        failure to persist is logged: the process still remembers it)."""
        await self._load(model)
        if model in self._no_tools:
            return
        self._no_tools.add(model)
        log.warning("the upstream does not take tools for model %r: serving it with memory in"
                    " the prompt only (set [models.%r] tools = false to skip the probe)",
                    model, model)
        await self._persist(model)

    async def _persist(self, model: str) -> None:
        data: dict[str, Any] = {}
        entry = self.calibration.to_dict()["models"].get(model)
        if entry is not None:
            data["calibration"] = entry
        if model in self._no_tools:
            data["tools"] = False
        try:
            await self.store.put_model_stats(model, data)
        except Exception:
            log.exception("could not persist the stats of a model")

    def observe(self, model: str, local_tokens: int, usage: dict[str, Any] | None) -> None:
        reported = (usage or {}).get("prompt_tokens")
        if isinstance(reported, int) and self.calibration.observe(model, local_tokens, reported):
            self._dirty.add(model)

    def flush_soon(self) -> None:
        """`flush()` in a background task when one is due (issue 19: the turn that crossed
        FLUSH_EVERY_SECONDS used to wait for a commit per changed model before its answer was
        sent). What it would lose to a crash is what a crash loses anyway: the calibration
        learned since the last flush, which the next turns learn again."""
        if (self._dirty and time.monotonic() - self._last_flush >= FLUSH_EVERY_SECONDS
                and (self._flushing is None or self._flushing.done())):
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self, *, force: bool = False) -> None:
        """Persist changed factors, at most every FLUSH_EVERY_SECONDS unless forced (a forced
        flush, at shutdown, first waits for a background one still running)."""
        if force and self._flushing is not None:
            await asyncio.wait([self._flushing])
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < FLUSH_EVERY_SECONDS):
            return
        self._last_flush = now
        dirty, self._dirty = self._dirty, set()
        for model in dirty:
            await self._persist(model)


def _merged(current: Calibration, restored: Calibration, model: str) -> Calibration:
    data = current.to_dict()
    data["models"][model] = restored.to_dict()["models"][model]
    return Calibration.from_dict(data)
