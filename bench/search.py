"""Search latency at 10k and 100k items per agent: full-text vs hybrid, SQLite vs Postgres.

The store is called directly (no HTTP, no model): each sample is one `archival_memory_search`
or `conversation_search` tool call, exactly as the agent loop runs it, against one agent that
holds N passages and N messages. Hybrid adds the vector side (in-process numpy scoring over the
agent's cached matrix) and score fusion, through `SearchService` as in the server (with its
neighbour step for messages). The query embedding is precomputed, so the
numbers are memproxy's own cost; a real endpoint adds its round trip (often 20-100 ms), which
`[embeddings] query_timeout_s` bounds.

Fixtures are bulk-loaded (SQLite executemany in one transaction, Postgres COPY), text from a
20,000-word synthetic vocabulary with Zipf frequencies (so query words match hundreds to
thousands of rows, as real words do), vectors random and normalized (scoring cost does not
depend on what the vectors mean). The first hybrid search per kind loads the matrix into the
cache ("cold load"); the percentiles are over warm searches.

    python -m bench.search [--sizes 10000,100000] [--backends sqlite,postgres] [--dim 256]
                           [--out DIR] [--json PATH]
    python -m bench all --out DIR     (the suite runs it with --out DIR)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from proxy.core.tools import MemoryState, ToolContext, archival_memory_search, conversation_search
from proxy.embeddings import HybridSearch, SearchService, VectorIndex
from proxy.embeddings.client import normalize_rows
from proxy.store import open_store
from proxy.store.sqlite.fts import index_pending
from proxy.store.vector_base import MESSAGE, PASSAGE

from .common import eprint, fmt_ms, machine_block, machine_info, markdown_table, summarize

MODEL = "bench-embed"
TARGET_P99_MS = 50.0
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_ENV = "MEMPROXY_BENCH_POSTGRES_URL"
TOOLS = ("archival_memory_search", "conversation_search")

# --------------------------------------------------------------------------- fixtures

_SYLLABLES = ("ka ri to me sa lo ne vu pa di mo ra te ko li su na be go fi "
              "an el or us in ar en ol um ix").split()


def vocabulary(size: int = 20_000, seed: int = 7) -> list[str]:
    """`size` distinct pronounceable words, most frequent first."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    return list(words)


class Text:
    """Zipf-distributed words: word r is drawn with probability proportional to 1/r."""

    def __init__(self, seed: int) -> None:
        self.words = vocabulary()
        weights = 1.0 / np.arange(1, len(self.words) + 1)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def sentence(self, words: int) -> str:
        picks = self.rng.choice(len(self.words), size=words, p=self.p)
        return " ".join(self.words[i] for i in picks)

    def query(self) -> str:
        """2-4 content words (frequency ranks 20-3,000)."""
        ranks = self.rng.integers(20, 3000, size=int(self.rng.integers(2, 5)))
        return " ".join(self.words[r] for r in ranks)


async def _load_sqlite(store: Any, agent_pk: int, conv_pk: int, passages: list[str],
                       messages: list[str], now: float) -> None:
    def run(db: Any) -> None:
        db.executemany("INSERT INTO passages (agent_pk, text, tags, created_at)"
                       " VALUES (?, ?, ?, ?)",
                       ((agent_pk, t, "[]", now - i) for i, t in enumerate(passages)))
        db.executemany(
            "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text,"
            " created_at, in_context, visible, tokens) VALUES (?, ?, ?, 't', ?, ?, ?, ?, 0, 1, 1)",
            ((conv_pk, agent_pk, i + 1, role, json.dumps({"role": role, "content": t}), t,
              now - len(messages) + i) for i, (role, t) in enumerate(_roles(messages))))
        index_pending(db)  # as the store's batches do: indexed once, the mark moved past them

    await store._write(run)
    await store._write(lambda db: db.execute("ANALYZE"))


async def _load_postgres(store: Any, agent_pk: int, conv_pk: int, passages: list[str],
                         messages: list[str], now: float) -> None:
    async with store.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "passages", columns=["agent_pk", "text", "tags", "created_at"],
            records=[(agent_pk, t, "[]", now - i) for i, t in enumerate(passages)])
        await conn.copy_records_to_table(
            "messages", columns=["conversation_pk", "agent_pk", "seq", "turn_id", "role", "data",
                                 "text", "created_at", "in_context", "visible", "tokens"],
            records=[(conv_pk, agent_pk, i + 1, "t", role,
                      json.dumps({"role": role, "content": t}), t, now - len(messages) + i,
                      False, True, 1) for i, (role, t) in enumerate(_roles(messages))])
        await conn.execute("ANALYZE")


def _roles(messages: list[str]) -> list[tuple[str, str]]:
    return [("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(messages)]


async def _load_vectors(store: Any, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for kind in (PASSAGE, MESSAGE):
        cursor = 0
        while True:
            page = await store.pending_texts(kind, MODEL, cursor, 5000)
            cursor = page.cursor
            if page.items:
                matrix = normalize_rows(rng.normal(size=(len(page.items), dim))
                                        .astype(np.float32))
                await store.put_vectors(kind, MODEL, [(item.pk, matrix[i])
                                                      for i, item in enumerate(page.items)])
            if page.done and not page.items:
                break


# --------------------------------------------------------------------------- measuring


async def _time(call: Callable[[], Awaitable[Any]], count: int) -> tuple[list[float], list[float]]:
    """Wall-clock and this process's CPU time (all its threads: SQLite runs on its reader
    thread; a Postgres server's work is not included) per call, in ms."""
    wall, cpu = [], []
    for _ in range(count):
        c0, t0 = time.process_time(), time.perf_counter()
        await call()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


async def measure_store(store: Any, items: int, args: argparse.Namespace) -> list[dict]:
    """Load `items` passages and messages into a fresh agent, then time every tool x mode."""
    text = Text(seed=items)
    agent = await store.ensure_agent("bench", f"agent-{uuid.uuid4().hex[:8]}", [])
    conv = await store.ensure_conversation(agent.pk, "default")
    passages = [text.sentence(int(text.rng.integers(20, 60))) for _ in range(items)]
    messages = [text.sentence(int(text.rng.integers(8, 40))) for _ in range(items)]
    t0 = time.perf_counter()
    loader = _load_sqlite if store.dialect == "sqlite" else _load_postgres
    await loader(store, agent.pk, conv.pk, passages, messages, time.time())
    await _load_vectors(store, args.dim, seed=items)
    eprint(f"  {store.dialect} {items:,}: loaded in {time.perf_counter() - t0:.1f} s")

    queries = [text.query() for _ in range(args.queries)]
    rng = np.random.default_rng(1)
    vectors = {q: normalize_rows(rng.normal(size=(1, args.dim)).astype(np.float32))[0]
               for q in queries}

    async def embed_query(query: str) -> np.ndarray:
        return vectors[query]

    index = VectorIndex(store, MODEL, 8 << 30)
    hybrid = HybridSearch(store, index, embed_query, timeout_s=5.0)
    memory = MemoryState.of([])
    rows = []
    # Through the SearchService, as the tools are wired in the server (its neighbour re-ranking
    # reads deeper candidate lists than the tool's limit), with the turns around each hit as
    # the default `[memory] search_neighbours = 1` reads them.
    for mode, backend in (("full-text", SearchService(store)),
                          ("hybrid", SearchService(store, hybrid))):
        ctx = ToolContext(store=backend, agent_pk=agent.pk, conversation_id="other",
                          neighbours=store, neighbour_count=1)
        for tool, fn in (("archival_memory_search", archival_memory_search),
                         ("conversation_search", conversation_search)):
            position = iter(range(10**9))

            def call(fn: Any = fn, ctx: ToolContext = ctx,
                     position: Any = position) -> Awaitable[str]:
                return fn(memory, {"query": queries[next(position) % len(queries)]}, ctx)

            cold = (await _time(call, 1))[0][0]
            await _time(call, args.warmup)
            wall, cpu = await _time(call, args.queries)
            stats, cpu_stats = summarize(wall), summarize(cpu)
            rows.append({"backend": store.dialect, "items": items, "kind": tool, "mode": mode,
                         "first_ms": round(cold, 3),
                         **{f"{k}_ms": round(v, 3) for k, v in stats.items()},
                         **{f"cpu_{k}_ms": round(v, 3) for k, v in cpu_stats.items()}})
            eprint(f"    {tool:<24} {mode:<9} p50 {stats['p50']:.2f} ms"
                   f"  p99 {stats['p99']:.2f} ms  (first {cold:.1f} ms)")
    rows.append({"backend": store.dialect, "items": items, "kind": "vector cache",
                 "mode": "hybrid", "cache_mb": round(index.nbytes / 2**20, 1)})
    return rows


async def _with_store(url: str, work: Callable[[Any], Awaitable[list[dict]]]) -> list[dict]:
    store = open_store(url)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


async def _postgres_database(server: str, create: bool, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return server.rsplit("/", 1)[0] + f"/{name}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print the Markdown report; return {"rows": [...], ...}."""
    sizes = [int(s) for s in str(args.sizes).split(",") if s]
    backends = [b for b in str(args.backends).split(",") if b]
    rows: list[dict] = []
    started = time.monotonic()
    for backend in backends:
        for items in sizes:
            if backend == "sqlite":
                tmp = tempfile.mkdtemp(prefix="memproxy-bench-search-")
                try:
                    rows += asyncio.run(_with_store(f"sqlite:///{tmp}/bench.db",
                                                    lambda s, n=items: measure_store(s, n, args)))
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            else:
                name = f"memproxy_bench_{int(time.time())}_{os.getpid()}"
                url = asyncio.run(_postgres_database(args.postgres_url, True, name))
                try:
                    rows += asyncio.run(_with_store(url,
                                                    lambda s, n=items: measure_store(s, n, args)))
                finally:
                    asyncio.run(_postgres_database(args.postgres_url, False, name))
    config = {"sizes": sizes, "backends": backends, "dim": args.dim, "queries": args.queries,
              "warmup": args.warmup, "seconds": round(time.monotonic() - started, 1)}
    timed = [r for r in rows if "p99_ms" in r]
    cache = [r for r in rows if "cache_mb" in r]
    report = render(machine_info(), config, timed, cache)
    print(report)
    return {"config": config, "rows": timed, "cache": cache, "report": report}


def render(info: dict[str, Any], config: dict[str, Any], timed: list[dict],
           cache: list[dict]) -> str:
    table = markdown_table(
        ["backend", "items", "tool", "mode", "p50 ms", "p95 ms", "p99 ms", "max ms", "first ms",
         "CPU p50", "CPU p99"],
        [[r["backend"], f"{r['items']:,}", r["kind"], r["mode"], fmt_ms(r["p50_ms"]),
          fmt_ms(r["p95_ms"]), fmt_ms(r["p99_ms"]), fmt_ms(r["max_ms"]),
          fmt_ms(r["first_ms"], 1), fmt_ms(r["cpu_p50_ms"]), fmt_ms(r["cpu_p99_ms"])]
         for r in timed],
        align=["l", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r"])
    worst = max((r["p99_ms"] for r in timed if r["items"] >= 100_000), default=None)
    verdict = ("" if worst is None else
               f"\nTarget p99 <= {TARGET_P99_MS:.0f} ms at 100k items: "
               f"{'met' if worst <= TARGET_P99_MS else 'NOT met'} (worst p99 {worst:.1f} ms).")
    memory = ", ".join(f"{r['backend']} {r['items']:,}: {r['cache_mb']:.0f} MB"
                       for r in cache)
    return (f"# Search latency (store called directly)\n\n{machine_block(info)}\n\n"
            f"Vectors: {config['dim']} dimensions, in-process scoring; {config['queries']} "
            f"queries per row after {config['warmup']} warm-up; `first` = the first search "
            f"(hybrid: loads the agent's matrix); `CPU` = this process's CPU time per search "
            f"(a Postgres server's work not included).\n\n{table}\n{verdict}\n\n"
            f"Vector cache after the hybrid searches: {memory}.\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench search",
                                description="archival/conversation search latency, full-text "
                                            "vs hybrid, SQLite vs Postgres")
    p.add_argument("--sizes", default="10000,100000", help="items per agent (comma-separated)")
    p.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    p.add_argument("--dim", type=int, default=256, help="vector dimensions (default 256)")
    p.add_argument("--queries", type=int, default=200, help="timed searches per row")
    p.add_argument("--warmup", type=int, default=10, help="untimed searches per row")
    p.add_argument("--postgres-url", default=os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES),
                   help=f"a server where the user may CREATE DATABASE (${POSTGRES_ENV})")
    p.add_argument("--out", metavar="DIR", help="write DIR/search.md and DIR/search.json")
    p.add_argument("--json", metavar="PATH", help="write the rows to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    data = json.dumps({k: v for k, v in result.items() if k != "report"}, indent=1)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "search.md").write_text(result["report"])
        (out / "search.json").write_text(data)
        eprint(f"wrote {out / 'search.md'} and {out / 'search.json'}")
    if args.json:
        Path(args.json).write_text(data)
        eprint(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
