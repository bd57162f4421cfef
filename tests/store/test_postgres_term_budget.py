"""Postgres search within a postings budget (proxy/store/postgres/term_stats.py).

A query whose words are in more rows together than the budget ranks only the rows holding its
rarest words, with every word's term frequency and agent-wide IDF; under the budget the exact
statement runs unchanged. Each test lowers the budget instead of loading 100k rows.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import store_backends
from tests.store_backends import assistant, result, setup, user

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

APPLES = [f"we talked about apples again, day {i}" for i in range(40)]
ZEBRAS = ["apples and a zebra", "a zebra at the zoo", "zebra zebra apples apples"]


def _run(url: str, body: Any) -> None:
    from proxy.store.postgres.store import PostgresStore

    store_backends.run_with_store(PostgresStore(url), body)


async def _passages(s: Any) -> tuple[Any, dict[str, int]]:
    agent, _ = await setup(s)
    pks = {}
    for text in APPLES + ZEBRAS:
        pks[text] = (await s.insert_passage(agent.pk, text, [])).pk
    return agent, pks


def test_over_budget_the_rare_words_rows_come_first_with_their_exact_scores(
    postgres_url: str,
) -> None:
    """"apples zebra" over a budget of 10 rows: only the zebra rows are read and ranked, and
    (every row here holding one of the words, so the agent's mean length is the matches')
    each scores exactly what the unbudgeted statement gives it, apples counted."""
    from proxy.store.postgres.term_stats import TermStats

    async def body(s: Any) -> None:
        agent, pks = await _passages(s)
        exact = {h.pk: h.score for h in await s.search_passages(agent.pk, "apples zebra",
                                                                  top_k=50)}
        assert len(exact) == len(APPLES) + len(ZEBRAS)
        s.term_stats = TermStats(budget=10)
        hits = await s.search_passages(agent.pk, "apples zebra", top_k=5)
        assert {h.pk for h in hits} == {pks[t] for t in ZEBRAS}
        assert hits[0].pk == pks["zebra zebra apples apples"]  # apples still counts
        for h in hits:
            assert h.score == pytest.approx(exact[h.pk], rel=1e-9)
        order = sorted(exact, key=lambda pk: -exact[pk])[:3]
        assert [h.pk for h in hits] == order

    _run(postgres_url, body)


def test_under_budget_the_exact_statement_runs_and_counts_are_cached(postgres_url: str) -> None:
    """Words in fewer rows than the budget: no budgeted plan, the same hits. The lexemes are
    counted once; a search whose lexemes are all known sends no planning statement; the row
    count is reread after REREAD_S, and an agent grown by more than a quarter is counted
    again."""
    from proxy.store.postgres.term_stats import REREAD_S, TermStats

    async def body(s: Any) -> None:
        agent, _ = await _passages(s)
        now = [0.0]
        stats = s.term_stats = TermStats(budget=1000, clock=lambda: now[0])
        words = "apples zebra"
        assert await stats.plan(s.pool.fetch, s.fts_config, "passages", agent.pk,
                                words) is None
        assert (stats.counted, stats.round_trips) == (2, 1)
        first = await s.search_passages(agent.pk, words, top_k=50)
        assert (stats.counted, stats.round_trips) == (2, 1)  # all cached: straight to ranking
        s.term_stats = TermStats(budget=10**9)
        assert [(h.pk, h.score) for h in await s.search_passages(agent.pk, words, top_k=50)] \
            == [(h.pk, h.score) for h in first]
        s.term_stats = stats
        for i in range(len(APPLES)):  # the agent doubles...
            await s.insert_passage(agent.pk, f"pears {i}", [])
        await s.search_passages(agent.pk, words, top_k=5)
        assert (stats.counted, stats.round_trips) == (2, 1)  # ...unseen for REREAD_S
        now[0] += REREAD_S + 1
        await s.search_passages(agent.pk, words, top_k=5)
        assert (stats.counted, stats.round_trips) == (4, 2)  # counted again
        await s.search_passages(agent.pk, words, top_k=5)
        assert (stats.counted, stats.round_trips) == (4, 2)

    _run(postgres_url, body)


def test_a_word_in_no_row_is_counted_again_after_a_while(postgres_url: str) -> None:
    """A lexeme found in no row is remembered as absent for REREAD_S only: a row holding it
    may be written any moment."""
    from proxy.store.postgres.term_stats import REREAD_S, TermStats

    async def body(s: Any) -> None:
        agent, _ = await _passages(s)
        now = [0.0]
        stats = s.term_stats = TermStats(budget=1000, clock=lambda: now[0])
        assert await s.search_passages(agent.pk, "unicorns", top_k=5) == []
        assert (stats.counted, stats.round_trips) == (1, 1)
        await s.search_passages(agent.pk, "unicorns", top_k=5)
        assert (stats.counted, stats.round_trips) == (1, 1)
        unicorn = await s.insert_passage(agent.pk, "two unicorns", [])
        now[0] += REREAD_S + 1
        assert [h.pk for h in await s.search_passages(agent.pk, "unicorns", top_k=5)] \
            == [unicorn.pk]
        assert (stats.counted, stats.round_trips) == (2, 2)

    _run(postgres_url, body)


def test_over_budget_messages_keep_their_filters(postgres_url: str) -> None:
    """Recall search over budget: the zebra messages first, roles still filter, and a word in
    no message neither counts nor is searched."""
    from proxy.store.postgres.term_stats import TermStats

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user(t) for t in APPLES + ZEBRAS[:1]])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant(ZEBRAS[1])))
        s.term_stats = TermStats(budget=5)
        hits = await s.search_messages(agent.pk, "apples zebra unicorns", limit=10)
        assert len(hits) == 2 and {h.text for h in hits} == set(ZEBRAS[:2])
        users = await s.search_messages(agent.pk, "apples zebra", roles=["user"], limit=10)
        assert [h.text for h in users] == [ZEBRAS[0]]
        listed = await s.search_agent_messages(agent.pk, "apples zebra", limit=10)
        assert sorted(m.seq for _, m, _ in listed) == sorted(h.seq for h in hits)

    _run(postgres_url, body)


def test_a_query_without_lexemes_finds_nothing(postgres_url: str) -> None:
    """Only stopwords: no lexeme to count, no plan, no hits (the empty tsquery is never
    AND-ed with the scope alone)."""
    from proxy.store.postgres.term_stats import TermStats

    async def body(s: Any) -> None:
        agent, _ = await _passages(s)
        s.term_stats = TermStats(budget=0)
        assert await s.term_stats.plan(s.pool.fetch, s.fts_config, "passages", agent.pk,
                                       "the") is None
        assert await s.term_stats.plan(s.pool.fetch, s.fts_config, "passages", agent.pk,
                                       "") is None
        assert await s.search_passages(agent.pk, "the", top_k=5) == []

    _run(postgres_url, body)


def test_tsquery_literal_keeps_lexemes_as_they_are(postgres_url: str) -> None:
    """Quotes and backslashes are escaped, and nothing is stemmed again: Postgres reads the
    literal back as the same lexemes."""
    from proxy.store.postgres.term_stats import tsquery_literal

    lexemes = ["it's", "back\\slash", "running", "o''k"]

    async def body(s: Any) -> None:
        got = await s.pool.fetchval("SELECT querytree($1::text::tsquery)",
                                    tsquery_literal(lexemes))
        assert got == " | ".join("'" + lx.replace("\\", "\\\\").replace("'", "''") + "'"
                                 for lx in lexemes)
        assert await s.pool.fetchval(
            "SELECT array_to_tsvector($1::text[]) @@ $2::text::tsquery",
            ["back\\slash"], tsquery_literal(["back\\slash"]))

    _run(postgres_url, body)


def test_a_rarest_word_beyond_the_budget_is_still_searched(postgres_url: str) -> None:
    """Even the rarest word over the budget: its rows are read and ranked (the rarest is always
    kept), only the commoner words' rows beyond them are not."""
    from proxy.store.postgres.term_stats import TermStats

    async def body(s: Any) -> None:
        agent, pks = await _passages(s)
        s.term_stats = TermStats(budget=10)
        hits = await s.search_passages(agent.pk, "apples", top_k=100)
        assert {h.pk for h in hits} == {pk for t, pk in pks.items() if "apples" in t}
        assert all(h.score > 0 for h in hits)
        assert hits[0].pk == pks["zebra zebra apples apples"]  # twice, in a short row

    _run(postgres_url, body)


def test_the_cache_is_bounded_and_follows_the_agents_size() -> None:
    """Entries per (table, agent) are refilled when the agent grows or shrinks by a quarter or
    holds too many lexemes, and the oldest entry goes when there are too many agents."""
    from proxy.store.postgres import term_stats as ts

    stats = ts.TermStats()
    entry = stats._entry("passages", 1, 100)
    entry.counts["zebra"] = 3
    assert stats._entry("passages", 1, 125).counts == {"zebra": 3}
    assert stats._entry("passages", 1, 126).counts == {}  # grown by more than a quarter
    stats._entry("passages", 1, 126).counts["zebra"] = 3
    assert stats._entry("passages", 1, 101).counts == {"zebra": 3}
    assert stats._entry("passages", 1, 100).counts == {}  # shrunk by more than a quarter
    big = stats._entry("messages", 1, 10)
    big.counts.update({f"w{i}": 1 for i in range(ts.CACHE_LEXEMES + 1)})
    assert stats._entry("messages", 1, 10).counts == {}
    for agent in range(2, ts.CACHE_AGENTS + 2):
        stats._entry("passages", agent, 10).counts["x"] = 1
    assert len(stats._entries) == ts.CACHE_AGENTS
    assert ("passages", 1) not in stats._entries and ("messages", 1) not in stats._entries
