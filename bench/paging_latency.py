"""Turn latency over a long chat with compactions: does any user wait for a summary?

A long conversation (`--turns`, default 300) in an 8k window (`--window`) through memproxy,
SDK style, against the fake upstream answering every call — the turn's and the summarizer's —
after `--latency-ms` (default 150, a fast hosted model). Measured client-side, end to end,
per turn, on SQLite and on Postgres: p50, p95 and max, and the number of compactions (turns
whose context shrank by more than a tenth of the window, whichever way the summary is
written). Targets (issue #19): p95 ≤ 1.3 × p50 and max ≤ 1.6 × p50.

    python -m bench paging-latency [--turns N] [--backends sqlite,postgres] [--src DIR]

`--src DIR` runs memproxy from another source tree (e.g. a checkout of main, for a
before/after comparison); the benchmark itself always runs from this one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from .common import (
    eprint,
    exit_on_signals,
    fmt_ms,
    machine_block,
    machine_info,
    markdown_table,
    stop_all_children,
)
from .infra import postgres_database
from .overhead import MODEL
from .paging import HEADERS, REPLY_WORDS, PagingStack, UpstreamLog, config_toml, user_message

DEFAULT_TURNS = 300
DEFAULT_WINDOW = 8192
DEFAULT_LATENCY_MS = 150.0
WARMUP = 3  # first turns left out (connections, caches)
TARGET_P95 = 1.3  # × p50
TARGET_MAX = 1.6  # × p50
AGENT = "paging-latency"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@contextlib.contextmanager
def database(backend: str) -> Iterator[str | None]:
    """None: the stack's own SQLite file; else a fresh Postgres database's URL."""
    if backend == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url


def run_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    upstream_args = ["--count-tokens", "--summarize", "--reply-words",
                     f"{REPLY_WORDS[0]}-{REPLY_WORDS[1]}", "--latency-ms", str(args.latency_ms)]
    with database(backend) as url:
        stack = PagingStack(upstream_args=upstream_args, config_toml=config_toml(args.window),
                            context_window=args.window)
        if url is not None:
            stack.db_url = url
        if args.src:
            stack.memproxy_src = Path(args.src).resolve()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with stack, httpx.Client(timeout=120.0, limits=limits) as client:
            return measure(client, stack, args, backend)


def measure(client: httpx.Client, stack: PagingStack, args: argparse.Namespace,
            backend: str) -> dict[str, Any]:
    log = UpstreamLog(client, stack.upstream_url)
    log.skip()
    url = f"{stack.memproxy_url}/v1/chat/completions"
    headers = {**HEADERS, "x-agent-id": AGENT}
    latencies: list[float] = []
    contexts: list[int] = []
    summarizer_calls = 0
    gc.collect()
    gc.disable()  # the load generator's own pauses are not memproxy's latency
    try:
        for turn in range(1, args.turns + 1):
            content = orjson.dumps({"model": MODEL, "messages": [
                {"role": "user", "content": user_message(turn, "latency")}]})
            start = time.perf_counter()
            response = client.post(url, content=content, headers=headers)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"turn {turn}: HTTP {response.status_code} "
                                   f"{response.text[:300]}")
            latencies.append(elapsed * 1000)
            contexts.append(int(response.headers.get("x-memproxy-context-tokens", 0)))
            summarizer_calls += sum(1 for r in log.new() if r["summarizer"])
            if turn % 100 == 0:
                eprint(f"  {backend}: turn {turn}/{args.turns}")
    finally:
        gc.enable()
    time.sleep(1.0)  # a summary still being written when the chat ended
    summarizer_calls += sum(1 for r in log.new() if r["summarizer"])
    shrink = args.window // 10
    compactions = sum(1 for a, b in zip(contexts, contexts[1:], strict=False) if a - b > shrink)
    measured = latencies[WARMUP:]
    p50 = percentile(measured, 0.5)
    p95 = percentile(measured, 0.95)
    top = max(measured)
    return {"backend": backend, "turns": len(measured), "compactions": compactions,
            "summarizer_calls": summarizer_calls, "p50_ms": p50, "p95_ms": p95, "max_ms": top,
            "p95_ratio": p95 / p50, "max_ratio": top / p50,
            "met": p95 / p50 <= TARGET_P95 and top / p50 <= TARGET_MAX,
            "latencies_ms": latencies}


def render(info: dict[str, Any], args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    source = args.src or "this tree"
    lines = ["## Turn latency over a long chat with compactions", "", machine_block(info), "",
             f"{args.turns} turns (first {WARMUP} left out), window {args.window:,}, every "
             f"upstream call answered after {args.latency_ms:g} ms, memproxy from {source}; "
             "client-side end-to-end latency.", ""]
    table = [[r["backend"], f"{r['turns']}", f"{r['compactions']}", f"{r['summarizer_calls']}",
              fmt_ms(r["p50_ms"]), fmt_ms(r["p95_ms"]), fmt_ms(r["max_ms"]),
              f"{r['p95_ratio']:.2f} (≤ {TARGET_P95})", f"{r['max_ratio']:.2f} (≤ {TARGET_MAX})",
              "met" if r["met"] else "NOT met"] for r in rows]
    lines += [markdown_table(["backend", "turns", "compactions", "summarizer calls", "p50 ms",
                              "p95 ms", "max ms", "p95 / p50", "max / p50", "targets"], table)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench paging-latency",
                                description="turn latency over a long chat with compactions")
    p.add_argument("--turns", type=int, default=DEFAULT_TURNS)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS,
                   help="the fake model's time per call (default 150)")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--src", help="run memproxy from this source tree (before/after)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_signals()
    if args.turns <= WARMUP + 10:
        raise SystemExit(f"--turns must be > {WARMUP + 10}")
    info = machine_info()
    rows = []
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend not in ("sqlite", "postgres"):
                raise SystemExit(f"unknown backend {backend!r}")
            eprint(f"paging-latency: {backend}")
            rows.append(run_backend(args, backend))
    finally:
        stop_all_children()
    print(render(info, args, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "config": vars(args),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
