"""Per-agent document frequencies of words, so a search can skip reading its common words'
matches (Postgres; SQLite's automatic recall does the same with sqlite/term_stats.py).

The BM25 statement (search.py) learns each query word's document frequency by reading every
row that matches the OR-ed query: a word in a third of a 100k-row agent is ~30,000 tsvectors
read and unnested, which was the whole tail of archival search at 100k (p99 51.5 ms against a
50 ms target; docs/search.md). Those words weigh little (IDF ~1.1 against ~7.6 for a word in
50 rows) but cost the most.

So each store keeps, per agent and table, the number of searchable rows holding each lexeme
(counted once through the GIN index, then cached), an estimate of the mean row length, and the
row count they were read at. A search learns its lexemes and their counts from the cache, or
from one small statement (which also reads the agent's row count) when a word is new or the
count is older than `REREAD_S`. When the query's lexemes together are in at most
`POSTINGS_BUDGET` rows the exact statement runs unchanged; otherwise only the rows holding its
rarest lexemes (`pick_rarest`, within the budget, the rarest always) are read and ranked,
with every query lexeme's term frequency in them and every IDF from the cached counts: the
same BM25, on fewer candidates. What is lost is only a row holding none of the rare words, whose score is at most
the sum of the common words' small IDFs.

The counts are dropped when the agent's row count has grown or shrunk by a quarter since they
were read (counts change slowly relative to one another); a lexeme in no row is remembered as
absent for `REREAD_S` only (it may be written any moment) and never searched for. Each process
keeps its own cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..query_terms import pick_rarest
from .message_terms import CURRENT_VECTOR

# Rows the BM25 statement may read for one search before it keeps only the rarest lexemes (as
# SQLite's automatic recall: sqlite/term_stats.py). At 100k rows of the search benchmark a match
# costs ~9 µs (heap row read, tsvector filtered and unnested, summed): 4,258 matches took 40 ms,
# so the budget bounds that part near 18 ms; searches under it are exact and unchanged.
POSTINGS_BUDGET = 2000
# Only the lexemes of queries asked are cached: at most 64 x 2,048 of them, ~16 MB at worst.
CACHE_AGENTS = 64  # (table, agent) entries kept; the least recently filled is dropped first
CACHE_LEXEMES = 2048  # per entry: beyond it the entry is refilled
CACHE_WORDS = 16384  # (configuration, word) -> lexemes, cleared when beyond
# The agent's row count is reread (one small statement) when older than this; a lexeme found in
# no row is counted again after as long (a row holding it may have been written since).
REREAD_S = 30.0
REFRESH_GROWTH = 1.25
SAMPLE_ROWS = 2000  # rows read to estimate the mean length for the budgeted statement

# Per table: the agent's searchable rows (their counter on the agent row) and the table of
# their vectors, counted through its GIN index with the agent's scope lexeme, which the tsquery
# holds (no agent_pk, which the heap rows would have to be read for: 12 ms against 6 for a
# lexeme in 3,157 passages). Messages are counted in `message_terms` (migration 15: the
# vectors of their visible rows, superseded ones too) and among the agent's queued rows.
TABLES = {
    "messages": ("recall_count", "message_terms"),
    "passages": ("passage_count", "passages"),
}


def tsquery_literal(lexemes: Sequence[str]) -> str:
    """A tsquery text OR-ing `lexemes` as they are (quoted: not parsed or stemmed again;
    quotes and backslashes doubled, as the tsquery input syntax asks)."""
    return " | ".join("'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in lexemes)


def lexemes_sql(fts_config: str, table: str) -> str:
    """$1 agent, $2 the query's words: (word, its lexemes, the agent's searchable rows), a row
    per word (each word alone through to_tsvector: the same parser and dictionaries as the
    indexed text, so the same lexemes)."""
    counter = TABLES[table][0]
    return (f"SELECT w, tsvector_to_array(to_tsvector('{fts_config}', memproxy_fold(w))),"
            f" (SELECT {counter} FROM agents WHERE pk = $1) FROM unnest($2::text[]) AS w")


def counts_sql(table: str) -> str:
    """$1 agent, $2 lexemes, $3 their tsquery literals: (lexeme, rows holding it), one row per
    lexeme, each counted through the GIN index with the agent's scope lexeme (and, for
    messages, among the agent's queued rows, their vectors computed once)."""
    vectors = TABLES[table][1]
    count = ("(SELECT count(*) FROM " + vectors + " m WHERE m.tsv @@"
             " (u.tq::tsquery && memproxy_scope_query($1)))")
    if table != "messages":
        return f"SELECT u.lx, {count} FROM unnest($2::text[], $3::text[]) AS u(lx, tq)"
    return ("WITH queued AS MATERIALIZED (SELECT memproxy_message_vector(m.agent_pk, m.text,"
            " m.data) AS tsv FROM message_terms_pending p JOIN messages m"
            " ON m.pk = p.message_pk AND m.agent_pk = p.agent_pk"
            " WHERE p.agent_pk = $1 AND m.visible AND NOT m.superseded)"
            f" SELECT u.lx, {count} + (SELECT count(*) FROM queued WHERE queued.tsv @@"
            " u.tq::tsquery) FROM unnest($2::text[], $3::text[]) AS u(lx, tq)")


def mean_length_sql(table: str) -> str:
    """$1 agent: the mean distinct-lexeme length of up to SAMPLE_ROWS of its searchable rows
    (any ones: an estimate of the agent-wide mean, which a match-limited search cannot take
    from its matches, as these are the rows of rare words only)."""
    if table == "messages":
        rows = (f"SELECT {CURRENT_VECTOR} AS tsv FROM messages m"
                " WHERE m.agent_pk = $1 AND m.visible AND NOT m.superseded")
    else:
        rows = f"SELECT m.tsv FROM {table} m WHERE m.agent_pk = $1"
    return f"SELECT avg(length(s.tsv))::float8 FROM ({rows} LIMIT {SAMPLE_ROWS}) s"


@dataclass
class _Entry:
    rows_at_fill: int
    read_at: float  # when the agent's row count was last read
    counts: dict[str, int]
    absent: dict[str, float] = field(default_factory=dict)  # lexeme -> when it was in no row
    mean_length: float | None = None


@dataclass(frozen=True)
class Budgeted:
    """What the budgeted statement needs: every query lexeme with its count, the kept ones
    (as a tsquery literal), the mean row length."""

    lexemes: list[str]
    counts: list[float]
    kept: str
    mean_length: float


Fetch = Callable[..., Any]  # awaitable fetch(sql, *args) -> rows


class TermStats:
    """Cached lexeme counts per (table, agent) for one store (see the module docstring).

    A search whose words' lexemes and counts are all cached, in an agent whose row count was
    read less than `REREAD_S` ago, costs no extra round trip: the ranking statement is the
    first thing sent to the database. That matters beyond its ~0.3 ms: hybrid search starts
    the full-text statement and then scores vectors on the event loop's thread
    (embeddings/hybrid.py), and a round trip in front of the statement made the two run one
    after the other (+3-5 ms at the median on the search benchmark)."""

    def __init__(self, *, budget: int = POSTINGS_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.clock = clock
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._lexemes: dict[tuple[str, str], tuple[str, ...]] = {}  # (config, word) -> lexemes
        self.counted = 0  # lexemes counted in the database (observable for tests)
        self.round_trips = 0  # planning statements sent (observable for tests)

    def _entry(self, table: str, agent_pk: int, rows: int) -> _Entry:
        key = (table, agent_pk)
        entry = self._entries.get(key)
        if entry is not None and (rows > entry.rows_at_fill * REFRESH_GROWTH
                                  or rows * REFRESH_GROWTH < entry.rows_at_fill
                                  or len(entry.counts) > CACHE_LEXEMES):
            entry = None
        if entry is None:
            self._entries.pop(key, None)
            while len(self._entries) >= CACHE_AGENTS:
                self._entries.pop(next(iter(self._entries)))
            entry = self._entries[key] = _Entry(rows, self.clock(), {})
        entry.read_at = self.clock()
        return entry

    def _known(self, entry: _Entry | None, lexemes: list[str]) -> bool:
        """Whether `entry` is fresh and holds every lexeme's count (or its recent absence)."""
        if entry is None or self.clock() - entry.read_at > REREAD_S:
            return False
        return all(lx in entry.counts or lx in entry.absent for lx in lexemes)

    async def _lexemes_and_entry(self, fetch: Fetch, fts_config: str, table: str,
                                 agent_pk: int, words: list[str]
                                 ) -> tuple[list[str], _Entry | None]:
        """The words' lexemes (in order, distinct) and the agent's entry, from the cache when
        it knows them all, else from one planning statement (which also rereads the row
        count)."""
        cached = [self._lexemes.get((fts_config, w)) for w in words]
        entry = self._entries.get((table, agent_pk))
        if all(c is not None for c in cached):
            lexemes = list(dict.fromkeys(lx for c in cached for lx in c or ()))
            if not lexemes or self._known(entry, lexemes):
                return lexemes, entry
        self.round_trips += 1
        rows = await fetch(lexemes_sql(fts_config, table), agent_pk, words)
        if len(self._lexemes) > CACHE_WORDS:
            self._lexemes.clear()
        for word, found, _ in rows:
            self._lexemes[(fts_config, word)] = tuple(found or ())
        lexemes = list(dict.fromkeys(lx for _, found, _ in rows for lx in found or ()))
        return lexemes, self._entry(table, agent_pk, int(rows[0][2] or 0)) if rows else None

    async def plan(self, fetch: Fetch, fts_config: str, table: str, agent_pk: int, words: str
                   ) -> Budgeted | None:
        """None when the query's lexemes are in at most `budget` rows together (the exact
        statement reads them all), or fold to nothing; otherwise the budgeted search's
        inputs. `words`: the query's terms, space-separated (search.query_words);
        `fts_config` the store's validated configuration (inlined)."""
        terms = words.split()
        if not terms:
            return None
        lexemes, entry = await self._lexemes_and_entry(fetch, fts_config, table, agent_pk,
                                                       terms)
        if not lexemes or entry is None:
            return None
        now = self.clock()
        missing = [lx for lx in lexemes if lx not in entry.counts
                   and now - entry.absent.get(lx, -REREAD_S - 1) > REREAD_S]
        if missing:
            self.counted += len(missing)
            for lx, count in await fetch(counts_sql(table), agent_pk, missing,
                                         [tsquery_literal([lx]) for lx in missing]):
                if count:
                    entry.counts[lx] = int(count)
                    entry.absent.pop(lx, None)
                else:
                    entry.absent[lx] = now
        counts = {lx: entry.counts.get(lx, 0) for lx in lexemes}
        if sum(counts.values()) <= self.budget:
            return None
        if entry.mean_length is None:
            mean = (await fetch(mean_length_sql(table), agent_pk))[0][0]
            entry.mean_length = float(mean or 1.0)
        kept = pick_rarest(counts, lexemes, budget=self.budget)
        present = [lx for lx in lexemes if counts[lx]]
        return Budgeted(present, [float(counts[lx]) for lx in present], tsquery_literal(kept),
                        entry.mean_length)
