"""Which words of a query are worth searching for, by how many messages hold them (SQLite).

FTS5's bm25 counts, for every phrase of a query, the rows of the whole index that hold it (its
document frequency, for the IDF) by reading the phrase's entire posting list: a common word in a
database of 20,000 messages costs a few hundred microseconds each time, whatever the agent or
the `newest` limit, and grows with the database. Automatic recall searches on every turn
(turn/recall.py), so its search keeps only the query's rarest words: they carry most of the
ranking anyway (a word in every other message says little about which one is meant), and their
posting lists are short.

When even the rarest word is common (its messages alone number more than the budget), the
words carry almost nothing to rank by: bm25 would weigh a word found in thousands of messages
near zero and order its matches by length and repetition, at the cost of reading its whole
posting list. Such a search is not ranked at all: its newest matches come first (`rarest`
says so, and the store orders by recency), which is also the better guess for what a message
full of everyday words refers to.

Document frequencies are counted by FTS5 itself (a MATCH of the one word, so the index's
tokenizer and stemmer apply as they do to the search: "puppies" counts the rows of "puppi")
and cached per process: the first lookup of a common word reads its posting list once, later
turns read the cache. The relative order of words changes slowly as
messages arrive, so the cache is dropped when the index has grown by a quarter since it was
filled. A word found in no message is never cached (it may be written any moment) and never
searched for (it cannot match).
"""

from __future__ import annotations

import sqlite3

from ..query_terms import pick_rarest, query_terms
from .fts import MESSAGE_COLUMNS, quote

COUNT_ROWS = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?"
# Postings bm25 may read for the IDF of the kept words: the rarest word is always kept, the
# next ones while their document frequencies together stay within this (pick_rarest).
POSTINGS_BUDGET = 2000
CACHE_SIZE = 4096
REFRESH_GROWTH = 1.25  # drop the cache when the index holds this many times the rows it did


class TermFrequencies:
    """Cached document frequencies of words in the messages' full-text index."""

    def __init__(self, *, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._cache: dict[str, int] = {}
        self._indexed_at_fill = 0
        self.lookups = 0  # words read from the vocabulary table (observable for tests)

    def rarest(self, db: sqlite3.Connection, query: str, indexed: int, *,
               budget: int = POSTINGS_BUDGET) -> tuple[str, bool]:
        """The words of `query` (query_terms.py) worth searching for, space-separated, or ""
        when none occurs in any message; and whether they are worth ranking by bm25 (False:
        even the rarest is in more than `budget` messages, see the module docstring).
        `indexed`: how many rows the index holds now (its progress mark), to tell when the
        cache is stale."""
        if indexed > max(self._indexed_at_fill, 1) * REFRESH_GROWTH or len(self._cache) > self.size:
            self._cache.clear()
        if not self._cache:
            self._indexed_at_fill = indexed
        terms = query_terms(query)
        frequencies = {}
        for term in terms:
            df = self._cache.get(term)
            if df is None:
                self.lookups += 1
                df = db.execute(COUNT_ROWS, (f"{MESSAGE_COLUMNS} : {quote(term)}",)).fetchone()[0]
                if df:
                    self._cache[term] = df
            frequencies[term] = df
        kept = pick_rarest(frequencies, terms, budget=budget)
        return " ".join(kept), sum(frequencies[t] for t in kept) <= budget
