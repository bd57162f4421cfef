"""The model catalog remembers a model's refusal of tools in the model stats store, beside its
token calibration, on both backends: a new catalog (a restart) knows it, and a later flush of
the calibration does not forget it."""

from __future__ import annotations

from typing import Any

from proxy.config import load_settings
from proxy.models.catalog import ModelCatalog
from tests import store_backends
from tests.store_backends import Backend

store_backend = store_backends.store_backend  # fixture: one run per backend


def catalog(store: Any, models: dict | None = None) -> ModelCatalog:
    settings = load_settings(environ={}, overrides={"models": models or {}})
    return ModelCatalog(settings, store, upstream=None)  # type: ignore[arg-type]


def test_a_refusal_survives_a_restart_and_calibration_flushes(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        first = catalog(s)
        assert await first.tools_supported("gemma3:4b")
        first.observe("gemma3:4b", 100, {"prompt_tokens": 120})
        await first.mark_no_tools("gemma3:4b")
        assert not await first.tools_supported("gemma3:4b")
        first.observe("gemma3:4b", 100, {"prompt_tokens": 121})
        await first.flush(force=True)  # writes the calibration: the refusal stays
        stored = await s.get_model_stats("gemma3:4b")
        assert stored["tools"] is False and "calibration" in stored

        second = catalog(s)
        assert not await second.tools_supported("gemma3:4b")
        assert await second.factor("gemma3:4b") != 1.0  # calibration restored too
        assert await second.tools_supported("llama3.1:8b")
        # configuration wins over what was learned
        assert await catalog(s, {"gemma3:*": {"tools": True}}).tools_supported("gemma3:4b")
        assert not await catalog(s, {"llama3*": {"tools": False}}).tools_supported("llama3.1")

    store_backend.run(body)
