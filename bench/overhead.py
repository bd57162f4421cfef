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

    python -m bench overhead [--requests N] [--warmup W] [--json out.json]
    python -m bench.overhead --help
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from .common import (
    REPO_ROOT,
    Child,
    child_env,
    eprint,
    exit_on_signals,
    fmt_delta,
    fmt_ms,
    free_port,
    machine_block,
    machine_info,
    markdown_table,
    stop_all_children,
    summarize,
)
from .fake_upstream import DEFAULT_CONTEXT_WINDOW
from .populate import populate

MODEL = "bench-model"
UPSTREAM_KEY = "sk-bench"
TARGET_P50_MS = 2.0  # issue #5: stateful overhead p50 <= 2 ms, p99 <= 10 ms, flat to 100k stored
TARGET_P99_MS = 10.0
TARGET_TTFT_P50_MS = 3.0
LETTA_P50_MS = 145.0  # Letta 0.11.7 (SQLite), mock upstream, same kind of machine: REFERENCE.md
LETTA_P95_MS = 190.0
LITELLM_P50_MS = 2.0  # LiteLLM's published median relay overhead
TENANT = "default"  # the implicit tenant of a server with no API keys

# --------------------------------------------------------------------------- text


_WORDS = """
the a to of and in that is for it you with on as be this was are have not at but we they can
your from by or an will all about one would there their what so up out if when which time like
just some more into them could then other than now only its also back after use two how our work
first well way even new want because any these give day most us memory plan trip garden recipe
weather project meeting budget python server database question answer reason idea paper review
sister brother friend city train morning evening weekend coffee music book chapter note list
remember forget prefer usually often never always maybe probably certainly quickly slowly early
late small large quiet busy simple careful honest useful green blue warm cold fresh old young
""".split()


def _sentence(rng: random.Random, words: int) -> str:
    chosen = [rng.choice(_WORDS) for _ in range(words)]
    chosen[0] = chosen[0].capitalize()
    return " ".join(chosen) + rng.choice([".", ".", ".", "?", "!"])


def paragraph(rng: random.Random, words: int) -> str:
    """English-looking text of about `words` words (~1.2 tokens per word with punctuation)."""
    out: list[str] = []
    left = words
    while left > 0:
        n = min(left, rng.randint(7, 16))
        out.append(_sentence(rng, n))
        left -= n
    return " ".join(out)


def user_text(index: int) -> str:
    """The new user message of measured request `index`: 15-40 words, different each time."""
    rng = random.Random(index)
    return f"Message {index}. " + paragraph(rng, rng.randint(15, 40))


# --------------------------------------------------------------------------- pre-population


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str
    label: str
    target: str  # "upstream" or "memproxy"
    stream: bool = False
    agent_prefix: str | None = None  # stateful when set
    stored_at_start: int = 0  # messages per conversation before warm-up
    baseline: str = "a"
    agents: int | None = None  # agents to rotate over; None: the run's --agents
    in_context: bool = False  # stored messages are in the context window (else paged out)
    # results
    total_ms: list[float] = field(default_factory=list)  # end-to-end, whole response read
    ttft_ms: list[float] = field(default_factory=list)  # streaming: first content token
    memproxy_ms: list[float] = field(default_factory=list)  # x-memproxy-overhead-ms
    context_tokens: list[int] = field(default_factory=list)  # x-memproxy-context-tokens
    upstream_calls: int = 0
    upstream_bytes: int = 0
    rss_after: int | None = None
    peak_rss: int | None = None

    @property
    def stateful(self) -> bool:
        return self.agent_prefix is not None

    @property
    def measured(self) -> list[float]:
        """The latency this scenario is judged by: TTFT when streaming, else end-to-end."""
        return self.ttft_ms if self.stream else self.total_ms


def level_key(stored: int) -> str:
    """c1k, c10k, c100k, c2500, ..."""
    return f"c{stored // 1000}k" if stored % 1000 == 0 else f"c{stored}"


def default_scenarios(with_streaming: bool = True, levels: Sequence[int] = (1000, 10_000, 100_000),
                      stored_agents: int = 2, in_context: int = 0) -> list[Scenario]:
    """(a), (b), (c0), one stateful scenario per stored level (paged out, as paging keeps them
    in a long conversation), optionally one with `in_context` messages all in the window, and
    the streaming trio."""
    scenarios = [
        Scenario("a", "(a) direct to fake upstream", "upstream"),
        Scenario("b", "(b) memproxy pass-through", "memproxy"),
        Scenario("c0", "(c0) stateful, empty agent at start", "memproxy", agent_prefix="bench-0"),
    ]
    for stored in levels:
        key = level_key(stored)
        scenarios.append(Scenario(key, f"({key}) stateful, {stored:,} stored, paged out",
                                  "memproxy", agent_prefix=f"bench-{key}",
                                  stored_at_start=stored, agents=stored_agents))
    if in_context:
        key = f"{level_key(in_context)}-in"
        scenarios.append(Scenario(key, f"({key}) stateful, {in_context:,} stored, all in context",
                                  "memproxy", agent_prefix=f"bench-{key}",
                                  stored_at_start=in_context, in_context=True))
    if with_streaming:
        scenarios += [
            Scenario("s-a", "(s-a) stream, direct to fake upstream", "upstream", stream=True,
                     baseline="s-a"),
            Scenario("s-b", "(s-b) stream, memproxy pass-through", "memproxy", stream=True,
                     baseline="s-a"),
            Scenario("s-c0", "(s-c0) stream, stateful, empty agent at start", "memproxy",
                     stream=True, agent_prefix="bench-s0", baseline="s-a"),
        ]
    return scenarios


# --------------------------------------------------------------------------- the stack


TMP_PREFIX = "memproxy-bench-"


def sweep_stale_dirs() -> None:
    """Delete temporary directories left by a benchmark that was killed (SIGKILL skips every
    cleanup; its children die with it, see common.Child)."""
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            pid = int((path / "owner.pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge (no pid file yet, or another user's process)


class Stack:
    """Fake upstream + memproxy on a fresh SQLite file in a temporary directory.

    `prepare(db_url)` runs before memproxy starts (to pre-populate the database). Use as a
    context manager; everything is stopped and deleted on exit (and at interpreter exit).
    """

    def __init__(self, prepare: Callable[[str], None] | None = None,
                 memproxy_env: dict[str, str] | None = None, keep_dir: bool = False,
                 memproxy_cmd: Sequence[str] | None = None,
                 context_window: int = DEFAULT_CONTEXT_WINDOW,
                 upstream_args: Sequence[str] = ()) -> None:
        self.prepare = prepare
        self.context_window = context_window
        self.upstream_args = list(upstream_args)  # extra options for bench.fake_upstream
        self.memproxy_env = memproxy_env or {}
        # What runs `serve ...`; a profiler can wrap it, e.g.
        # ["py-spy", "record", "-o", "out.svg", "--", sys.executable, "-m", "proxy"].
        self.memproxy_cmd = list(memproxy_cmd or [sys.executable, "-m", "proxy"])
        self.keep_dir = keep_dir
        sweep_stale_dirs()
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        (self.tmp / "owner.pid").write_text(str(os.getpid()))
        self.db_url = f"sqlite:///{self.tmp / 'bench.db'}"
        self.upstream: Child | None = None
        self.memproxy: Child | None = None
        self.upstream_url = ""
        self.memproxy_url = ""

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        up_port = free_port()
        self.upstream = Child(
            "fake upstream",
            [sys.executable, "-m", "bench.fake_upstream", "--port", str(up_port),
             "--context-window", str(self.context_window), *self.upstream_args],
            env=child_env(), log_path=self.tmp / "upstream.log", cwd=REPO_ROOT,
        )
        self.upstream_url = f"http://127.0.0.1:{up_port}"
        if self.prepare is not None:
            self.prepare(self.db_url)
        self.upstream.wait_http(f"{self.upstream_url}/v1/models")
        mp_port = free_port()
        env = child_env({"MEMPROXY_LOGGING_LEVEL": "WARNING",
                         "MEMPROXY_UPSTREAM_API_KEY": UPSTREAM_KEY, **self.memproxy_env})
        self.memproxy = Child(
            "memproxy",
            [*self.memproxy_cmd, "serve", "--host", "127.0.0.1",
             "--port", str(mp_port), "--database-url", self.db_url,
             "--upstream-url", f"{self.upstream_url}/v1"],
            env=env, log_path=self.tmp / "memproxy.log",
        )
        self.memproxy_url = f"http://127.0.0.1:{mp_port}"
        self.memproxy.wait_http(f"{self.memproxy_url}/health/liveliness", timeout_s=60)

    def base(self, target: str) -> str:
        return self.upstream_url if target == "upstream" else self.memproxy_url

    def upstream_stats(self) -> dict[str, int]:
        return httpx.get(f"{self.upstream_url}/stats", timeout=5).json()

    def close(self) -> None:
        for child in (self.memproxy, self.upstream):
            if child is not None:
                child.stop()
        if self.keep_dir:
            eprint(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def _first_content(buffer: bytes) -> bool:
    """Whether the SSE text so far holds a chunk with non-empty `delta.content`."""
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
    def __init__(self, stack: Stack, client: httpx.Client, agents: int) -> None:
        self.stack = stack
        self.client = client
        self.agents = agents
        self.errors: list[str] = []

    def request(self, scenario: Scenario, index: int, record: bool) -> None:
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": user_text(index)}],
        }
        if scenario.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        headers = {"authorization": f"Bearer {UPSTREAM_KEY}",
                   "content-type": "application/json"}
        if scenario.agent_prefix:
            headers["x-agent-id"] = (
                f"{scenario.agent_prefix}-{index % (scenario.agents or self.agents)}")
        url = f"{self.stack.base(scenario.target)}/v1/chat/completions"
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
        if not record:
            return
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


def measure(stack: Stack, scenarios: list[Scenario], *, requests: int, warmup: int,
            rounds: int, agents: int, deadline: float) -> bool:
    """Warm up each scenario, then run them interleaved in `rounds` rounds.

    Returns False when the deadline cut the measurement short.
    """
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    complete = True
    with httpx.Client(timeout=60.0, limits=limits) as client:
        runner = Runner(stack, client, agents)
        for scenario in scenarios:
            eprint(f"  warm-up {scenario.key} ({warmup} requests)")
            runner.run(scenario, range(0, warmup), record=False)
        per_round = [requests // rounds + (1 if r < requests % rounds else 0)
                     for r in range(rounds)]
        done = 0
        for r, count in enumerate(per_round):
            if time.monotonic() > deadline:
                eprint(f"  time limit reached after {r} of {rounds} rounds")
                complete = False
                break
            eprint(f"  round {r + 1}/{rounds}: {count} requests per scenario")
            for scenario in scenarios:
                start = warmup + done
                runner.run(scenario, range(start, start + count), record=True)
                if scenario.target == "memproxy" and stack.memproxy is not None:
                    rss = stack.memproxy.rss_bytes()
                    scenario.rss_after = rss
                    scenario.peak_rss = max(scenario.peak_rss or 0, rss or 0) or None
            done += count
    return complete


# --------------------------------------------------------------------------- reporting


def _stored_range(s: Scenario, warmup: int, requests: int, agents: int) -> str:
    if not s.stateful:
        return "–"
    turns = -(-(warmup + requests) // (s.agents or agents))  # per agent, rounded up
    return f"{s.stored_at_start:,}→{s.stored_at_start + 2 * turns:,}"


def results(scenarios: list[Scenario]) -> dict[str, dict[str, Any]]:
    by_key = {s.key: s for s in scenarios}
    out: dict[str, dict[str, Any]] = {}
    for s in scenarios:
        stats = summarize(s.measured)
        base = by_key.get(s.baseline)
        delta = None
        if base is not None and base is not s and base.measured:
            b = summarize(base.measured)
            delta = {q: stats[q] - b[q] for q in ("p50", "p95", "p99")}
        out[s.key] = {
            "label": s.label,
            "n": len(s.measured),
            "metric": "ttft_ms" if s.stream else "total_ms",
            "latency_ms": stats,
            "total_ms": summarize(s.total_ms) if s.stream else stats,
            "overhead_vs": s.baseline if delta else None,
            "overhead_ms": delta,
            "memproxy_header_ms": summarize(s.memproxy_ms) if s.memproxy_ms else None,
            "context_tokens_mean": (sum(s.context_tokens) / len(s.context_tokens)
                                    if s.context_tokens else None),
            "upstream_request_bytes_mean": (s.upstream_bytes / s.upstream_calls
                                            if s.upstream_calls else None),
            "upstream_calls_per_request": (s.upstream_calls / len(s.measured)
                                           if s.measured else None),
            "memproxy_rss_bytes": s.rss_after,
            "memproxy_peak_rss_bytes": s.peak_rss,
        }
    return out


def render(info: dict[str, Any], config: dict[str, Any], scenarios: list[Scenario],
           res: dict[str, dict[str, Any]]) -> str:
    lines = ["## memproxy overhead benchmark", "", machine_block(info),
             f"- run: {config['requests']} measured requests per scenario after "
             f"{config['warmup']} warm-up, sequential, one keep-alive connection, "
             f"{config['rounds']} interleaved rounds, stateful requests rotated over "
             f"{config['agents']} agents; the model's context window is "
             f"{config['context_window']:,} tokens",
             f"- load average after the run: {_load(config.get('load_avg_after'))}; this is a "
             f"shared machine, so compare rows of one run rather than runs", ""]
    e2e = [s for s in scenarios if not s.stream]
    stream = [s for s in scenarios if s.stream]

    def row(s: Scenario) -> list[str]:
        r = res[s.key]
        lat, d, h = r["latency_ms"], r["overhead_ms"] or {}, r["memproxy_header_ms"] or {}
        return [s.label, str(r["n"]), fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(lat["p99"]),
                fmt_delta(d.get("p50")), fmt_delta(d.get("p95")), fmt_delta(d.get("p99")),
                fmt_ms(h.get("p50")), fmt_ms(h.get("p95")), fmt_ms(h.get("p99"))]

    if e2e:
        lines += ["### End-to-end latency (ms), non-streaming", "",
                  markdown_table(
                      ["scenario", "N", "p50", "p95", "p99", "Δp50 vs (a)", "Δp95 vs (a)",
                       "Δp99 vs (a)", "memproxy hdr p50", "hdr p95", "hdr p99"],
                      [row(s) for s in e2e]), ""]
    if stream:
        lines += ["### Streaming: time to first content token (ms)", "",
                  markdown_table(
                      ["scenario", "N", "TTFT p50", "TTFT p95", "TTFT p99", "Δp50 vs (s-a)",
                       "Δp95 vs (s-a)", "Δp99 vs (s-a)", "memproxy hdr p50", "hdr p95",
                       "hdr p99"],
                      [row(s) for s in stream]), ""]
    detail_rows = []
    for s in scenarios:
        r = res[s.key]
        ctx = r["context_tokens_mean"]
        up = r["upstream_request_bytes_mean"]
        rss = r["memproxy_rss_bytes"]
        detail_rows.append([
            s.label,
            _stored_range(s, config["warmup"], config["requests"], config["agents"]),
            f"{ctx:,.0f}" if ctx is not None else "–",
            f"{up / 1024:,.1f}" if up is not None else "–",
            fmt_ms(r["total_ms"]["p50"]) if s.stream else "",
            f"{rss / 2**20:,.0f}" if rss and s.target == "memproxy" else "–",
        ])
    lines += ["### What each request carried", "",
              markdown_table(["scenario", "stored msgs per conversation (start→end)",
                              "prompt tokens (x-memproxy-context-tokens, mean)",
                              "upstream request body (KiB, mean)", "stream total p50 (ms)",
                              "memproxy RSS after (MiB)"], detail_rows), ""]
    lines += verdicts(res)
    return "\n".join(lines)


def plot(path: Path, scenarios: list[Scenario], res: dict[str, dict[str, Any]]) -> None:
    """Bars: overhead over the direct call and memproxy's own time, p50 and p99, per scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        eprint("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    keys = [s.key for s in scenarios if res[s.key]["overhead_ms"]]
    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 1.1), 4))
    width = 0.2
    series = [("Δ p50 vs direct", lambda r: r["overhead_ms"]["p50"]),
              ("Δ p99 vs direct", lambda r: r["overhead_ms"]["p99"]),
              ("own time p50", lambda r: (r["memproxy_header_ms"] or {}).get("p50", 0)),
              ("own time p99", lambda r: (r["memproxy_header_ms"] or {}).get("p99", 0))]
    for i, (label, value) in enumerate(series):
        ax.bar([k + (i - 1.5) * width for k in range(len(keys))],
               [value(res[k]) for k in keys], width, label=label)
    ax.axhline(TARGET_P50_MS, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(TARGET_P99_MS, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("ms")
    ax.set_title("memproxy overhead per request (targets dashed: p50, dotted: p99)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in values) if values else "n/a"


def verdicts(res: dict[str, dict[str, Any]]) -> list[str]:
    """Each stateful scenario against issue #5's targets, judged two ways: end-to-end minus the
    direct call (includes the HTTP hop through memproxy) and memproxy's own header figure."""
    out = [f"Targets: stateful overhead p50 ≤ {TARGET_P50_MS:g} ms and p99 ≤ {TARGET_P99_MS:g} "
           f"ms, flat from 0 to 100k stored; streaming TTFT overhead p50 ≤ "
           f"{TARGET_TTFT_P50_MS:g} ms.", ""]
    for key, r in res.items():
        if not key.startswith(("c", "s-c")) or not r["overhead_ms"]:
            continue
        d, h = r["overhead_ms"], r["memproxy_header_ms"] or {}
        if key.startswith("s-"):
            ok = d["p50"] <= TARGET_TTFT_P50_MS
            out.append(f"- {key}: TTFT Δp50 {d['p50']:.2f} ms (target ≤ "
                       f"{TARGET_TTFT_P50_MS:g}: {'met' if ok else 'missed'})")
            continue
        e2e = d["p50"] <= TARGET_P50_MS and d["p99"] <= TARGET_P99_MS
        own = bool(h) and h["p50"] <= TARGET_P50_MS and h["p99"] <= TARGET_P99_MS
        ratio = LETTA_P50_MS / d["p50"] if d["p50"] > 0 else float("inf")
        out.append(f"- {key}: end-to-end Δp50 {d['p50']:.2f} / Δp99 {d['p99']:.2f} ms "
                   f"({'met' if e2e else 'missed'}); memproxy's own time p50 "
                   f"{h.get('p50', float('nan')):.2f} / p99 {h.get('p99', float('nan')):.2f} ms "
                   f"({'met' if own else 'missed'}); {ratio:,.0f}× lighter than Letta's "
                   f"~{LETTA_P50_MS:g} ms median")
    levels = sorted((k for k in res if k.startswith("c") and k != "c0" and not k.endswith("-in")),
                    key=lambda k: res[k]["n"] and float(k[1:].rstrip("k") or 0))
    if "c0" in res and levels and res["c0"]["memproxy_header_ms"]:
        top = levels[-1]
        grow = (res[top]["memproxy_header_ms"]["p50"] - res["c0"]["memproxy_header_ms"]["p50"])
        out.append(f"- flat with stored size: memproxy's own p50 at {top} minus c0 = "
                   f"{grow:+.2f} ms")
    return out


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
    p.add_argument("--only", help="comma-separated scenario keys (a is always included), "
                                  "e.g. a,b,c0,s-a,s-c0")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming scenarios")
    p.add_argument("--time-limit", type=float, default=300.0,
                   help="stop measuring after this many seconds (default 300)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--out", type=Path, help="directory for overhead.json/.md/.png")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, db)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_signals()
    if args.requests < 1 or args.rounds < 1 or args.agents < 1 or args.warmup < 0:
        raise SystemExit("--requests, --rounds and --agents must be >= 1, --warmup >= 0")
    started = time.monotonic()
    info = machine_info()
    levels = [int(x) for x in str(args.stored).split(",") if x.strip() and int(x) > 0]
    scenarios = default_scenarios(with_streaming=not args.no_stream, levels=levels,
                                  stored_agents=args.stored_agents, in_context=args.in_context)
    if args.only:
        keys = {k.strip() for k in args.only.split(",") if k.strip()} | {"a"}
        if any(s.stream for s in scenarios if s.key in keys):
            keys.add("s-a")
        unknown = keys - {s.key for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.key in keys]
    agent_ids = {s.key: [f"{s.agent_prefix}-{k}" for k in range(s.agents or args.agents)]
                 for s in scenarios if s.stored_at_start}

    def prepare(db_url: str) -> None:
        for s in scenarios:
            if s.key in agent_ids:
                seconds = asyncio.run(populate(
                    db_url, agent_ids[s.key], s.stored_at_start, in_context=s.in_context,
                    text=paragraph))
                eprint(f"  pre-populated {s.key}: {len(agent_ids[s.key])} agents × "
                       f"{s.stored_at_start:,} messages in {seconds:.1f} s")

    eprint("starting the fake upstream and memproxy")
    try:
        with Stack(prepare=prepare, keep_dir=args.keep,
                   context_window=args.context_window) as stack:
            complete = measure(stack, scenarios, requests=args.requests, warmup=args.warmup,
                               rounds=args.rounds, agents=args.agents,
                               deadline=started + args.time_limit)
    finally:
        stop_all_children()
    config = {"requests": args.requests, "warmup": args.warmup, "rounds": args.rounds,
              "agents": args.agents, "stored": args.stored, "complete": complete,
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
                                   "context_tokens": s.context_tokens}
                           for s in scenarios}}
        Path(args.json).write_text(json.dumps(raw, indent=1))
        eprint(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
