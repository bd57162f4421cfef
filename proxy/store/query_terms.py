"""Free text to search terms, the same way for both backends.

User (and model) text is split into word tokens; common English function words are dropped
(unless nothing else is left): with OR semantics they would match almost every row, costing
time and drowning the ranking. SQLite quotes the terms for FTS5 (sqlite/fts.py), Postgres
turns them into a tsquery (postgres/search.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"[^\W_]+")  # runs of Unicode letters/digits (FTS5 unicode61 separators)

MAX_TERMS = 32

STOPWORDS = frozenset(
    """a about an and are as at be been but by can could did do does for from had has have he
    her him his how i if in into is it its me my no not of on or our she so than that the their
    them then there these they this those to us was we were what when where which who whom why
    will with would you your""".split()
)


def query_terms(query: str) -> list[str]:
    """Distinct lower-cased word tokens of `query`, stopwords removed when others remain."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(query or ""):
        seen.setdefault(token.lower(), None)
    terms = list(seen)
    content = [t for t in terms if t not in STOPWORDS]
    return (content or terms)[:MAX_TERMS]


def pick_rarest(frequencies: dict[str, int], terms: Sequence[str], *,
                budget: int) -> list[str]:
    """`terms` held by at least one row (a message, a passage), rarest first, the rarest always and the others
    while their frequencies add up to at most `budget`; in the query's order. Ties keep the
    query's order. Both backends keep a query's rarest words this way when its common words
    would cost too much to read (sqlite/term_stats.py, postgres/term_stats.py)."""
    present = sorted((t for t in terms if frequencies.get(t, 0) > 0),
                     key=lambda t: (frequencies[t], terms.index(t)))
    kept: list[str] = []
    spent = 0
    for term in present:
        if kept and spent + frequencies[term] > budget:
            break
        kept.append(term)
        spent += frequencies[term]
    return [t for t in terms if t in kept]
