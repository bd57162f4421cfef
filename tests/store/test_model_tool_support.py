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


def test_a_due_flush_runs_in_the_background_and_a_forced_one_waits_for_it(
        store_backend: Backend) -> None:
    """flush_soon (the turn observer's, issue 19) writes nothing until a flush is due, then
    starts one without waiting; the shutdown's forced flush waits for it, so what was learned
    is stored."""
    import time

    from proxy.models import catalog as catalog_module

    async def body(s: Any) -> None:
        c = catalog(s)
        c.observe("gemma3:4b", 100, {"prompt_tokens": 130})
        c.flush_soon()  # not due yet: the catalog was just created
        assert c._flushing is None
        c._last_flush = time.monotonic() - catalog_module.FLUSH_EVERY_SECONDS
        c.flush_soon()
        running = c._flushing
        assert running is not None
        c.flush_soon()  # one at a time
        assert c._flushing is running
        await c.flush(force=True)
        assert running.done()
        assert "calibration" in await s.get_model_stats("gemma3:4b")

    store_backend.run(body)


def test_a_search_bounded_to_the_newest_matches(store_backend: Backend) -> None:
    """`newest` (automatic recall's cost bound) ranks only the agent's newest full-text
    matches; the other filters (roles, dates, visibility) apply to those, on both backends."""
    from tests.store_backends import assistant, result, setup, user

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, other_conv = await setup(s, "bob")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("puppy puppy puppy, a puppy")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("no pets here")))
        await s.begin_turn(conv.pk, "t2", "h", None, [user("a puppy named Rex")])
        await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("Rex the puppy!")))
        await s.begin_turn(other_conv.pk, "t3", "h", None, [user("puppy puppy puppy")])

        full = await s.search_messages(agent.pk, "puppy")
        assert [h.seq for h in full][0] == 1 and {h.seq for h in full} == {1, 3, 4}
        bounded = await s.search_messages(agent.pk, "puppy", newest=2)
        assert {h.seq for h in bounded} == {3, 4}
        assert all(h.conversation_id == "default" for h in bounded)
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", newest=2,
                                                       roles=["user"])] == [3]
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", newest=3,
                                                       roles=["user"])] == [1, 3]
        assert len(await s.search_messages(agent.pk, "puppy", newest=500, limit=2)) == 2
        assert await s.search_messages(agent.pk, "kitten", newest=5) == []

    store_backend.run(body)
