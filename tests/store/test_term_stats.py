"""Automatic recall's word choice on SQLite (store/sqlite/term_stats.py): the rarest words of
the query by how many messages hold them, counted through FTS5 itself and cached."""

from __future__ import annotations

import asyncio
import functools

from hypothesis import given
from hypothesis import strategies as st

from proxy.store.sqlite.store import SQLiteStore
from proxy.store.sqlite.term_stats import pick_rarest
from tests.store_backends import assistant, result, user

WORDS = st.lists(st.sampled_from("ant bee cat dog elk fox gnu hen".split()), unique=True,
                 max_size=8)


@given(WORDS, st.dictionaries(st.sampled_from("ant bee cat dog elk fox gnu hen".split()),
                              st.integers(0, 5000)), st.integers(0, 6000))
def test_the_rarest_word_is_always_kept_and_the_rest_fit_the_budget(terms, frequencies, budget):
    kept = pick_rarest(frequencies, terms, budget=budget)
    present = [t for t in terms if frequencies.get(t, 0) > 0]
    assert [t for t in terms if t in kept] == kept  # the query's order
    assert set(kept) <= set(present)
    if present:
        rarest = min(frequencies[t] for t in present)
        assert kept and min(frequencies[t] for t in kept) == rarest
        assert len(kept) == 1 or sum(frequencies[t] for t in kept) <= budget
        # nothing rarer than a kept word was left out
        left = [t for t in present if t not in kept]
        assert all(frequencies[t] >= max(frequencies[k] for k in kept) for t in left)
    else:
        assert kept == []


def test_common_words_are_left_out_when_a_rare_one_is_there():
    frequencies = {"name": 3, "the": 9000, "hiking": 40}
    assert pick_rarest(frequencies, ["hiking", "the", "name"], budget=100) == ["hiking", "name"]
    assert pick_rarest(frequencies, ["the"], budget=100) == ["the"]
    assert pick_rarest({}, ["zebra"], budget=100) == []


def test_frequencies_are_counted_by_the_index_stemmed_and_cached(tmp_path):
    async def main():
        store = SQLiteStore(str(tmp_path / "t.db"))
        await store.open()
        agent = await store.ensure_agent("t", "a", [])
        conv = await store.ensure_conversation(agent.pk, "c")
        for n in range(6):
            text = "my puppies bark" if n == 0 else f"walk number {n} in the park"
            await store.begin_turn(conv.pk, f"t{n}", "h", None, [user(text)])
            await store.finish_turn(f"t{n}", conv.pk, agent.pk, result(assistant("ok")))
        # "puppy" finds "puppies" (the index's stemmer); both words fit the budget here
        hits = await store.search_messages(agent.pk, "puppy park", newest=50)
        first = store.term_frequencies.lookups
        again = await store.search_messages(agent.pk, "puppy park", newest=50)
        unknown = await store.search_messages(agent.pk, "zyzzyva", newest=50)
        lookups = store.term_frequencies.lookups
        await store.close()
        return [h.text for h in hits], [h.text for h in again], first, unknown, lookups

    hits, again, first, unknown, lookups = asyncio.run(main())
    assert hits == again and hits[0] == "my puppies bark" and len(hits) == 6
    assert first == 2 and lookups == 3  # cached; the unknown word looked up, never cached
    assert unknown == []


def test_a_word_unknown_at_first_is_found_once_written(tmp_path):
    """A word no message held is not cached as absent: written later, it is searched for."""
    async def main():
        store = SQLiteStore(str(tmp_path / "u.db"))
        await store.open()
        agent = await store.ensure_agent("t", "a", [])
        conv = await store.ensure_conversation(agent.pk, "c")
        before = await store.search_messages(agent.pk, "Zorblax", newest=50)
        await store.begin_turn(conv.pk, "t1", "h", None, [user("my dog is called Zorblax")])
        after = await store.search_messages(agent.pk, "Zorblax", newest=50)
        await store.close()
        return before, [h.text for h in after]

    assert asyncio.run(main()) == ([], ["my dog is called Zorblax"])


def test_a_query_of_common_words_lists_the_newest_matches_unranked(tmp_path):
    """When even the rarest word of a recall query is in more messages than the budget, bm25
    would weigh it near zero: the newest matches come first, with score 0; a rarer word in the
    same query is ranked as before."""
    async def main():
        store = SQLiteStore(str(tmp_path / "c.db"))
        await store.open()
        agent = await store.ensure_agent("t", "a", [])
        conv = await store.ensure_conversation(agent.pk, "c")
        texts = ["the cat the cat the cat", "a cat", "the cat sat", "cat and zebra",
                 "one more cat here"]
        for n, text in enumerate(texts):
            await store.begin_turn(conv.pk, f"t{n}", "h", None, [user(text)])
            await store.finish_turn(f"t{n}", conv.pk, agent.pk, result(assistant("ok")))
        store.term_frequencies.rarest = functools.partial(  # a budget of 3 messages
            type(store.term_frequencies).rarest, store.term_frequencies, budget=3)
        common = await store.search_messages(agent.pk, "cat", newest=50)
        rare = await store.search_messages(agent.pk, "cat zebra", newest=50)
        await store.close()
        return common, rare

    common, rare = asyncio.run(main())
    assert [h.text for h in common] == ["one more cat here", "cat and zebra", "the cat sat",
                                        "a cat", "the cat the cat the cat"]
    assert {h.score for h in common} == {0.0}
    assert [h.text for h in rare] == ["cat and zebra"] and rare[0].score > 0
