"""Latency overhead of memproxy over a zero-latency upstream (prints tables; not a test).

Three processes: a fake upstream that answers at once (`bench.fake_upstream`), memproxy run the
way a user runs it (`python -m proxy serve ...` on a fresh SQLite file), and this process, which
sends sequential requests over one keep-alive `httpx.Client` and times each one.

Scenarios (non-streaming unless noted):

  a        straight to the fake upstream (the baseline)
  b        through memproxy, pass-through (no agent named)
  c0       stateful, SDK style (only the new user message, `X-Agent-Id`), empty agents at start
  c1k-out  stateful, 1,000 stored messages per conversation, all out of context (storage size)
  c1k-in   stateful, 1,000 stored messages per conversation, all in context (prompt size: with
           no context paging yet the whole history is sent upstream on every turn)
  s-*      streaming: time to the first content token, direct / pass-through / stateful

Stateful requests rotate over `--agents` agents (default 10) so the history each one grows by
during the run stays small next to what the scenario names (c0: 0 -> 110 messages per
conversation with the defaults; c1k: 1,000 -> 1,110). Scenarios run interleaved in `--rounds`
rounds so that a change in background load on a shared machine hits all of them alike.

    python -m bench overhead [--requests N] [--warmup W] [--backends sqlite,postgres]
                             [--json out.json]

With several `--backends`, each runs its own fresh database, upstream and server, all at once,
and every round measures each backend in turn (a slow spell of the machine falls on all of
them alike); every table gets one row per scenario and backend (`c0 [postgres]`).
    python -m bench.overhead --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from .chat import Histories, add_decisions, reconcile_counts, reply_of
from .common import (
    REPO_ROOT,
    eprint,
    exit_on_signals,
    git_commit,
    machine_info,
    stop_all_children,
)
from .fake_upstream import DEFAULT_CONTEXT_WINDOW
from .infra import postgres_database
from .overhead_report import plot, render, results
from .populate import populate
from .scenarios import (  # noqa: F401 - re-exported: bench.paging imports them from here
    CHAT_HEADER,
    CHAT_ID,
    MODEL,
    TARGET_P50_MS,
    TARGET_P99_MS,
    TENANT,
    UPSTREAM_KEY,
    Scenario,
    chat_scenarios,
    default_scenarios,
    paragraph,
    user_text,
)
from .stack import Stack

# --------------------------------------------------------------------------- measuring


def _first_content(buffer: bytes) -> bool:
    """Whether the SSE text so far holds a chunk with non-empty `delta.content` (or, from the
    Responses API, an `output_text.delta` event)."""
    if b'"type":"response.output_text.delta"' in buffer:
        return True
    for event in buffer.split(b"\n\n")[:-1]:  # complete events only
        for line in event.split(b"\n"):
            if not line.startswith(b"data: {"):
                continue
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    return True
    return False


class Runner:
    """Sends and times one scenario's requests over the measuring client; `side` (another
    client) reads what is not timed: upstream stats, memproxy's metrics, stored transcripts."""

    def __init__(self, stack: Stack, client: httpx.Client, agents: int,
                 side: httpx.Client | None = None) -> None:
        self.stack = stack
        self.client = client
        self.side = side or client
        self.agents = agents
        self.errors: list[str] = []
        self.histories = Histories()

    def request(self, scenario: Scenario, index: int, record: bool) -> None:
        agent = index % (scenario.agents or self.agents)
        new = {"role": "user", "content": user_text(index)}
        messages = (self.histories.messages(scenario, agent, new) if scenario.chat
                    else [new])
        body: dict[str, Any] = {"model": MODEL, "messages": messages}
        if scenario.api == "responses":
            body = {"model": MODEL, "input": new["content"]}
        if scenario.stream:
            body["stream"] = True
            if scenario.api == "chat":
                body["stream_options"] = {"include_usage": True}
        headers = {"authorization": f"Bearer {UPSTREAM_KEY}",
                   "content-type": "application/json"}
        if scenario.agent_prefix:
            headers["x-agent-id"] = f"{scenario.agent_prefix}-{agent}"
            if scenario.chat:
                headers[CHAT_HEADER] = CHAT_ID
        path = "/v1/responses" if scenario.api == "responses" else "/v1/chat/completions"
        url = f"{self.stack.base(scenario.target)}{path}"
        content = orjson.dumps(body)
        client = self.client
        if scenario.stream:
            first = None
            buffer = b""
            start = time.perf_counter()
            with client.stream("POST", url, content=content, headers=headers) as response:
                for raw in response.iter_raw():
                    if first is None:
                        buffer += raw
                        if _first_content(buffer):
                            first = time.perf_counter()
                end = time.perf_counter()
            status = response.status_code
            text = buffer
        else:
            start = time.perf_counter()
            response = client.post(url, content=content, headers=headers)
            end = time.perf_counter()
            first = None
            status = response.status_code
            text = response.content
        if status != 200 or (scenario.stream and first is None):
            self.errors.append(f"{scenario.key} #{index}: HTTP {status}: {text[:300]!r}")
            if len(self.errors) >= 5:
                raise RuntimeError("too many failed requests:\n" + "\n".join(self.errors))
            return
        if scenario.chat:
            self.histories.answered(scenario, agent, new, reply_of(text))
        if not record:
            return
        scenario.sent_messages.append(len(messages))
        scenario.total_ms.append((end - start) * 1000)
        if first is not None:
            scenario.ttft_ms.append((first - start) * 1000)
        overhead = response.headers.get("x-memproxy-overhead-ms")
        if overhead is not None:
            scenario.memproxy_ms.append(float(overhead))
        ctx = response.headers.get("x-memproxy-context-tokens")
        if ctx is not None:
            scenario.context_tokens.append(int(ctx))

    def run(self, scenario: Scenario, indexes: range, record: bool) -> None:
        before = self.stack.upstream_stats() if record else None
        decisions = (reconcile_counts(self.side, self.stack.memproxy_url)
                     if scenario.stateful else None)
        gc.collect()
        gc.disable()  # the load generator's own pauses are not memproxy's latency
        try:
            for i in indexes:
                self.request(scenario, i, record)
        finally:
            gc.enable()
        if before is not None:
            after = self.stack.upstream_stats()
            scenario.upstream_calls += after["chat_requests"] - before["chat_requests"]
            scenario.upstream_bytes += after["body_bytes"] - before["body_bytes"]
        if decisions is not None:
            add_decisions(scenario.actions if record else scenario.warmup_actions, decisions,
                          reconcile_counts(self.side, self.stack.memproxy_url))


def measure(deployments: list[tuple[Stack, list[Scenario]]], *, requests: int, warmup: int,
            rounds: int, agents: int, deadline: float) -> bool:
    """Warm up each deployment's scenarios, then run them all interleaved in `rounds` rounds:
    every round runs each backend's scenarios in turn, so that a slow spell of a shared
    machine falls on all backends alike and their ratio stays meaningful.

    Returns False when the deadline cut the measurement short.
    """
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    complete = True
    with contextlib.ExitStack() as clients:
        runners: list[tuple[Runner, list[Scenario]]] = []
        for stack, scenarios in deployments:
            client = clients.enter_context(httpx.Client(timeout=60.0, limits=limits))
            side = clients.enter_context(httpx.Client(timeout=60.0))
            runner = Runner(stack, client, agents, side)
            runner.histories.load(side, stack.memproxy_url, scenarios, agents)
            for scenario in scenarios:
                eprint(f"  warm-up {scenario.key} ({warmup} requests)")
                runner.run(scenario, range(0, warmup), record=False)
            runners.append((runner, scenarios))
        per_round = [requests // rounds + (1 if r < requests % rounds else 0)
                     for r in range(rounds)]
        done = 0
        for r, count in enumerate(per_round):
            if time.monotonic() > deadline:
                eprint(f"  time limit reached after {r} of {rounds} rounds")
                complete = False
                break
            eprint(f"  round {r + 1}/{rounds}: {count} requests per scenario")
            for runner, scenarios in runners:
                for scenario in scenarios:
                    start = warmup + done
                    runner.run(scenario, range(start, start + count), record=True)
                    memproxy = runner.stack.memproxy
                    if scenario.target == "memproxy" and memproxy is not None:
                        rss = memproxy.rss_bytes()
                        scenario.rss_after = rss
                        scenario.peak_rss = max(scenario.peak_rss or 0, rss or 0) or None
            done += count
    return complete


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench overhead",
                                description="memproxy latency overhead over a zero-latency "
                                            "upstream (prints Markdown tables)")
    p.add_argument("--requests", "-n", type=int, default=500,
                   help="measured requests per scenario (default 500)")
    p.add_argument("--warmup", type=int, default=50,
                   help="warm-up requests per scenario, not counted (default 50)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleave the scenarios in this many rounds (default 5)")
    p.add_argument("--agents", type=int, default=10,
                   help="agents each stateful scenario rotates over (default 10)")
    p.add_argument("--stored", default="1000,10000,100000",
                   help="comma-separated stored-message levels, one stateful scenario each "
                        "(default 1000,10000,100000)")
    p.add_argument("--stored-agents", type=int, default=2,
                   help="agents per stored level (default 2; each gets the full level)")
    p.add_argument("--in-context", type=int, default=0, metavar="N",
                   help="add a scenario with N stored messages all in the context window")
    p.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT_WINDOW,
                   help="context window the fake upstream advertises for the model "
                        f"(default {DEFAULT_CONTEXT_WINDOW:,}; c1k-in stays below memproxy's "
                        "paging thresholds with it)")
    p.add_argument("--history", type=int, default=200, metavar="N",
                   help="chat UI scenario hN: N stored messages, all resent with each new one "
                        "(default 200; 0 skips it)")
    p.add_argument("--window", type=int, default=20, metavar="W",
                   help="chat UI scenarios wW-cN: the client resends its last W messages "
                        "(default 20; 0 skips them)")
    p.add_argument("--window-stored", default="10,1000,10000", metavar="LEVELS",
                   help="stored path lengths of the wW-cN scenarios (default 10,1000,10000)")
    p.add_argument("--window-in-context", type=int, default=40, metavar="N",
                   help="wW-cN: the last N stored messages are in memproxy's context, the "
                        "others paged out (default 40)")
    p.add_argument("--backends", default="sqlite",
                   help="comma-separated stores to measure, each on a fresh database, one after "
                        "the other, with rows per backend in every table: sqlite, postgres "
                        "(a throwaway database on BENCH_POSTGRES_URL's server; default sqlite)")
    p.add_argument("--only", help="comma-separated scenario keys (a and each one's baseline "
                                  "are included), e.g. a,b,c0,s-c0 or h200,w20-c10,w20-c10k")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming scenarios")
    p.add_argument("--time-limit", type=float, default=300.0,
                   help="stop measuring after this many seconds (default 300)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--out", type=Path, help="directory for overhead.json/.md/.png")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, db)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for memproxy, e.g. MEMPROXY_MEMORY_AUTO_RECALL=always "
                        "(repeatable; the bench's own environment is not passed on)")
    p.add_argument("--reply-words", metavar="MIN-MAX", type=_words_range,
                   help="the fake upstream replies MIN-MAX words (e.g. 200-300, an assistant "
                        "reply of usual length) instead of its short canned sentence: what "
                        "memproxy stores and indexes per turn grows with it")
    p.add_argument("--memproxy-src", type=Path, metavar="DIR",
                   help="run memproxy (and pre-populate with its store) from this source tree, "
                        "e.g. a worktree of another branch, for a before/after comparison; the "
                        "clients and the fake upstream stay this checkout's")
    return p


def _levels(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip() and int(x) > 0]


def _words_range(text: str) -> str:
    """MIN-MAX (or N) words, as bench.fake_upstream's --reply-words takes it."""
    low, _, high = text.partition("-")
    if not (low.isdigit() and (high or low).isdigit() and 0 < int(low) <= int(high or low)):
        raise argparse.ArgumentTypeError(f"MIN-MAX words, e.g. 200-300, not {text!r}")
    return text


def select_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The default set, or `--only`'s keys plus (a) and each selected scenario's baseline."""
    scenarios = default_scenarios(with_streaming=not args.no_stream, levels=_levels(args.stored),
                                  stored_agents=args.stored_agents, in_context=args.in_context)
    scenarios += chat_scenarios(history=args.history, window=args.window,
                                window_levels=_levels(args.window_stored),
                                window_in_context=args.window_in_context)
    if not args.only:
        return scenarios
    keys = {k.strip() for k in args.only.split(",") if k.strip()} | {"a"}
    unknown = keys - {s.key for s in scenarios}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    keys |= {s.baseline for s in scenarios if s.key in keys}
    return [s for s in scenarios if s.key in keys]


def _backends(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = set(names) - {"sqlite", "postgres"}
    if not names or unknown:
        raise SystemExit(f"--backends: sqlite and/or postgres, not {text!r}")
    return names


def _preparer(scenarios: list[Scenario], agents: int) -> Callable[[str], None]:
    """Pre-populates the stateful scenarios' agents in the fresh database (either store)."""
    agent_ids = {s.key: [f"{s.agent_prefix}-{k}" for k in range(s.agents or agents)]
                 for s in scenarios if s.stored_at_start}

    def prepare(db_url: str) -> None:
        for s in scenarios:
            if s.key in agent_ids:
                seconds = asyncio.run(populate(
                    db_url, agent_ids[s.key], s.stored_at_start, in_context=s.in_context,
                    text=paragraph, in_context_last=s.in_context_last,
                    conversation_id=CHAT_ID if s.chat else None))
                eprint(f"  pre-populated {s.key}: {len(agent_ids[s.key])} agents × "
                       f"{s.stored_at_start:,} messages in {seconds:.1f} s")
    return prepare


def use_memproxy_src(src: Path | None) -> None:
    """Make this process's `import proxy` (pre-population) load `src`'s, as the server will."""
    if src is None:
        return
    src = src.resolve()
    if not (src / "proxy" / "__init__.py").is_file():
        raise SystemExit(f"--memproxy-src {src}: no proxy/ package there")
    loaded = sys.modules.get("proxy")
    if loaded is not None and not str(loaded.__file__).startswith(str(src)):
        raise SystemExit(f"proxy was already imported from {loaded.__file__}")
    sys.path.insert(0, str(src))
    eprint(f"memproxy runs (and pre-populates) from {src}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_signals()
    if args.requests < 1 or args.rounds < 1 or args.agents < 1 or args.warmup < 0:
        raise SystemExit("--requests, --rounds and --agents must be >= 1, --warmup >= 0")
    started = time.monotonic()
    info = machine_info()
    if args.memproxy_src:
        info["bench_commit"], info["commit"] = info["commit"], git_commit(args.memproxy_src)
    backends = _backends(args.backends)
    use_memproxy_src(args.memproxy_src)
    scenarios: list[Scenario] = []
    complete = True
    memproxy_env = dict(item.split("=", 1) for item in args.env if "=" in item)
    try:
        # Every backend's deployment (its own fresh database, upstream and memproxy) runs at
        # once; `measure` alternates between them round by round.
        with contextlib.ExitStack() as exits:
            deployments: list[tuple[Stack, list[Scenario]]] = []
            for backend in backends:
                mine = select_scenarios(args)
                db_url = (exits.enter_context(postgres_database())
                          if backend == "postgres" else None)
                eprint(f"[{backend}] starting the fake upstream and memproxy")
                stack = exits.enter_context(Stack(
                    prepare=_preparer(mine, args.agents), keep_dir=args.keep,
                    context_window=args.context_window, memproxy_src=args.memproxy_src,
                    memproxy_env=memproxy_env, db_url=db_url,
                    upstream_args=["--reply-words", args.reply_words] if args.reply_words
                    else ()))
                deployments.append((stack, mine))
            complete &= measure(deployments, requests=args.requests, warmup=args.warmup,
                                rounds=args.rounds, agents=args.agents,
                                deadline=time.monotonic() + args.time_limit)
        for backend, (_, mine) in zip(backends, deployments, strict=True):
            if len(backends) > 1:
                for s in mine:  # rows per backend; each compared with its own run's baseline
                    s.key, s.baseline = f"{s.key}@{backend}", f"{s.baseline}@{backend}"
                    s.label = f"{s.label} [{backend}]"
            scenarios += mine
    finally:
        stop_all_children()
    config = {"requests": args.requests, "backends": backends, "warmup": args.warmup,
              "rounds": args.rounds,
              "agents": args.agents, "stored": args.stored, "complete": complete,
              "history": args.history, "window": args.window,
              "window_stored": args.window_stored, "window_in_context": args.window_in_context,
              "memproxy_src": str(args.memproxy_src or REPO_ROOT),
              "context_window": args.context_window,
              "seconds": round(time.monotonic() - started, 1),
              "load_avg_after": os.getloadavg() if hasattr(os, "getloadavg") else None}
    res = results(scenarios)
    text = render(info, config, scenarios, res)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "overhead.md").write_text(text + "\n")
        (args.out / "overhead.json").write_text(json.dumps(
            {"machine": info, "config": config, "results": res}, indent=1))
        plot(args.out / "overhead.png", scenarios, res)
    if not complete:
        print("\n(time limit reached: fewer requests were measured than asked)")
    eprint(f"finished in {config['seconds']} s")
    if args.json:
        raw = {"machine": info, "config": config, "results": res,
               "samples": {s.key: {"total_ms": s.total_ms, "ttft_ms": s.ttft_ms,
                                   "memproxy_overhead_ms": s.memproxy_ms,
                                   "context_tokens": s.context_tokens,
                                   "sent_messages": s.sent_messages}
                           for s in scenarios}}
        Path(args.json).write_text(json.dumps(raw, indent=1))
        eprint(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
