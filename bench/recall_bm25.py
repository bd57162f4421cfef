"""A plain Okapi BM25 (k1 = 1.2, b = 0.75, Lucene's IDF), the reference line of
`python -m bench recall`: what textbook keyword ranking gets on the same texts, with the same
word splitting and stopwords as memproxy's full-text search (proxy/store/query_terms.py) and a
light suffix stripping instead of Porter. Pure Python, in the benchmark only.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from proxy.store.query_terms import STOPWORDS, query_terms

_TOKEN = re.compile(r"[^\W_]+")
_SUFFIXES = ("ing", "ed", "es", "s")


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[:-len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    return [stem(t) for t in (w.lower() for w in _TOKEN.findall(text)) if t not in STOPWORDS]


class BM25:
    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = [Counter(tokens(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / max(1, len(self.docs))
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.k1, self.b = k1, b

    def top(self, query: str, k: int) -> list[int]:
        """Indexes of the k best texts (ties: the later text first, as memproxy's newest)."""
        terms = {stem(t) for t in query_terms(query)}
        scored = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            s = 0.0
            for t in terms:
                f = doc.get(t)
                if f:
                    norm = f + self.k1 * (1 - self.b + self.b * length / self.avg)
                    s += self.idf[t] * f * (self.k1 + 1) / norm
            if s > 0:
                scored.append((-s, -i))
        scored.sort()
        return [-i for _, i in scored[:k]]
