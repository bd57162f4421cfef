"""Throughput: stateful turns per second against a bare relay, over a concurrency sweep, and the
peak memory of memproxy while it runs (prints tables; not a test).

Three kinds of process, as in production: the fake upstream (`bench.fake_upstream`, optionally
with `--latency-ms` of model time), memproxy started the way a user starts it (`python -m proxy
serve`, `--workers N`, on SQLite or a fresh Postgres database) and the load generator
(`bench.loadgen`, a third process holding C keep-alive connections). For each concurrency C,
three modes run back to back:

  direct        the load generator talks straight to the fake upstream (the machine's ceiling)
  passthrough   through memproxy with no agent: the bare relay, same server, no state
  stateful      through memproxy with `X-Agent-Id` over `--agents` agents: the full turn

"Stateful / relay" is the ratio the target is judged by (≥ 50%), because absolute numbers on
a shared two-core machine move with everything else running on it.

    python -m bench throughput [--concurrency 1,4,16,64] [--duration 5] [--out DIR]
                               [--backend sqlite,postgres] [--workers 1,2]
                               [--memproxy-src DIR]

With several backends or worker counts, each deployment runs in turn and a first table puts
their stateful turns/s side by side. `--memproxy-src` runs memproxy from another source tree
(a worktree of the commit before a change), so a before/after pair differs only in that code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    REPO_ROOT,
    Child,
    child_env,
    eprint,
    exit_on_signals,
    fmt_ms,
    free_port,
    git_commit,
    machine_block,
    machine_info,
    markdown_table,
)
from .infra import RssSampler, postgres_database

MODES = ("direct", "passthrough", "stateful")
TARGET_RATIO = 0.5
TARGET_RSS_MB = 250
UPSTREAM_KEY = "sk-bench"


@dataclass(frozen=True)
class Deployment:
    backend: str = "sqlite"  # or "postgres"
    workers: int = 1
    latency_ms: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.backend} × {self.workers}"


class ThroughputStack:
    """Fake upstream + memproxy for one deployment; a context manager that cleans up."""

    def __init__(self, deployment: Deployment, memproxy_src: Path | None = None) -> None:
        self.deployment = deployment
        # memproxy's code from another tree (a before/after pair); the rest is this checkout's
        self.memproxy_src = memproxy_src.resolve() if memproxy_src else None
        self.tmp = Path(tempfile.mkdtemp(prefix="memproxy-throughput-"))
        self._exit = contextlib.ExitStack()
        self.upstream: Child | None = None
        self.memproxy: Child | None = None
        self.upstream_url = self.memproxy_url = ""

    def __enter__(self) -> ThroughputStack:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _database_url(self) -> str:
        if self.deployment.backend == "postgres":
            return self._exit.enter_context(postgres_database())
        return f"sqlite:///{self.tmp / 'bench.db'}"

    def _start(self) -> None:
        up_port, mp_port = free_port(), free_port()
        self.upstream = Child(
            "fake upstream",
            [sys.executable, "-m", "bench.fake_upstream", "--port", str(up_port),
             "--latency-ms", str(self.deployment.latency_ms)],
            env=child_env(), log_path=self.tmp / "upstream.log", cwd=REPO_ROOT)
        self.upstream_url = f"http://127.0.0.1:{up_port}"
        self.upstream.wait_http(f"{self.upstream_url}/v1/models")
        env = child_env({"MEMPROXY_LOGGING_LEVEL": "WARNING",
                         "MEMPROXY_UPSTREAM_API_KEY": UPSTREAM_KEY})
        if self.memproxy_src is not None:
            env["PYTHONPATH"] = str(self.memproxy_src)
        self.memproxy = Child(
            "memproxy",
            [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1",
             "--port", str(mp_port), "--database-url", self._database_url(),
             "--upstream-url", f"{self.upstream_url}/v1",
             "--workers", str(self.deployment.workers)],
            env=env, log_path=self.tmp / "memproxy.log", cwd=self.memproxy_src or REPO_ROOT)
        self.memproxy_url = f"http://127.0.0.1:{mp_port}"
        self.memproxy.wait_http(f"{self.memproxy_url}/health/liveliness", timeout_s=60)

    def __exit__(self, *exc: object) -> None:
        for child in (self.memproxy, self.upstream):
            if child is not None:
                child.stop()
        self._exit.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def load(url: str, mode: str, concurrency: int, duration: float, warmup: float,
         agents: int, agent_prefix: str = "load-") -> dict[str, Any]:
    """Run the load generator as its own process and return its JSON result."""
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, "--mode", mode,
            "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup), "--agents", str(agents), "--agent-prefix", agent_prefix]
    done = subprocess.run(argv, env=child_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=duration + warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(stack: ThroughputStack, *, modes: Sequence[str], concurrencies: Sequence[int],
          duration: float, warmup: float, agents: int) -> list[dict[str, Any]]:
    """Every mode at every concurrency; memproxy's peak RSS is sampled during its runs."""
    rows: list[dict[str, Any]] = []
    assert stack.memproxy is not None
    for concurrency in concurrencies:
        for mode in modes:
            url = stack.upstream_url if mode == "direct" else stack.memproxy_url
            # Each concurrency gets agents of its own, so every level measures conversations
            # of the same lengths (a level run after another would otherwise carry the
            # earlier levels' histories); long histories are the overhead benchmark's job.
            with RssSampler(stack.memproxy.pid) as rss:
                result = load(url, mode, concurrency, duration, warmup, agents,
                              f"load-c{concurrency}-")
            result["peak_rss_mb"] = None if mode == "direct" else rss.peak / 2**20
            result["deployment"] = stack.deployment.label
            rows.append(result)
            eprint(f"  {stack.deployment.label} c={concurrency:<3} {mode:<11} "
                   f"{result['rps']:8.1f} req/s  p50 {fmt_ms(result['p50_ms'])} ms  "
                   f"errors {result['errors']}")
    return rows


def _by(rows: Sequence[dict[str, Any]], mode: str, concurrency: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["mode"] == mode and r["concurrency"] == concurrency), None)


def analyse(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    best = {m: max((r["rps"] for r in rows if r["mode"] == m), default=0.0) for m in MODES}
    relay = best.get("passthrough") or 0.0
    ratio = best["stateful"] / relay if relay else None
    peak = max((r["peak_rss_mb"] or 0 for r in rows), default=0.0)
    return {"best_rps": best, "stateful_over_relay": ratio, "peak_rss_mb": peak,
            "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
            "rss_met": peak <= TARGET_RSS_MB}


def render(info: dict[str, Any], deployment: Deployment, rows: Sequence[dict[str, Any]],
           summary: dict[str, Any]) -> str:
    concurrencies = sorted({r["concurrency"] for r in rows})
    table = []
    for c in concurrencies:
        d, p, s = (_by(rows, m, c) for m in MODES)
        ratio = s["rps"] / p["rps"] if s and p and p["rps"] else None
        table.append([
            c, f"{d['rps']:.0f}" if d else "–", f"{p['rps']:.0f}" if p else "–",
            f"{s['rps']:.0f}" if s else "–", f"{ratio:.0%}" if ratio is not None else "–",
            fmt_ms(p["p50_ms"]) if p else "–", fmt_ms(s["p50_ms"]) if s else "–",
            fmt_ms(s["p99_ms"]) if s else "–",
            sum((r["errors"] for r in rows if r["concurrency"] == c), 0),
        ])
    ratio = summary["stateful_over_relay"]
    lines = [
        "## Throughput", "", machine_block(info),
        f"- deployment: {deployment.label}, fake upstream latency {deployment.latency_ms:g} ms",
        "",
        markdown_table(["concurrency", "direct req/s", "relay req/s", "stateful turns/s",
                        "stateful / relay", "relay p50 ms", "stateful p50 ms",
                        "stateful p99 ms", "errors"], table),
        "",
        f"- best stateful / best relay: **{ratio:.1%}** (target ≥ {TARGET_RATIO:.0%}: "
        f"{'met' if summary['ratio_met'] else 'missed'})" if ratio is not None else "",
        f"- peak RSS of memproxy (all its processes): **{summary['peak_rss_mb']:.0f} MB** "
        f"(target ≤ {TARGET_RSS_MB} MB: {'met' if summary['rss_met'] else 'missed'})",
    ]
    return "\n".join(lines)


def plot(path: Path, rows: Sequence[dict[str, Any]], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        eprint("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        points = sorted((r["concurrency"], r["rps"]) for r in rows if r["mode"] == mode)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("requests per second")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16,64",
                        help="comma-separated concurrency levels (default 1,4,16,64)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    parser.add_argument("--agents", type=int, default=200, help="distinct agents")
    parser.add_argument("--backend", "--backends", dest="backend", default="sqlite",
                        help="sqlite, postgres or both (comma-separated): each is measured in "
                             "turn and the stateful turns/s of all are compared in one table")
    parser.add_argument("--workers", default="1",
                        help="memproxy worker processes, or a comma-separated list (1,2): one "
                             "run per backend and count")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fake model latency")
    parser.add_argument("--out", type=Path, help="directory for throughput.json/.md/.png")
    parser.add_argument("--memproxy-src", type=Path, metavar="DIR",
                        help="run memproxy from this source tree, e.g. a worktree of another "
                             "branch, for a before/after pair; the load generator and the fake "
                             "upstream stay this checkout's")
    return parser


def deployments(args: argparse.Namespace) -> list[Deployment]:
    backends = [b.strip() for b in str(args.backend).split(",") if b.strip()]
    workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if not backends or set(backends) - {"sqlite", "postgres"} or not workers or min(workers) < 1:
        raise SystemExit("--backend: sqlite and/or postgres; --workers: counts >= 1")
    return [Deployment(b, w, args.latency_ms) for b in backends for w in workers]


def run(args: argparse.Namespace) -> dict[str, Any]:
    chosen = deployments(args)
    runs = [run_one(args, d, alone=len(chosen) == 1) for d in chosen]
    if len(runs) == 1:
        return runs[0]
    text = "\n\n".join([compare(runs), *(r["markdown"] for r in runs)])
    if args.out:
        (args.out / "throughput.md").write_text(text + "\n")
        (args.out / "throughput.json").write_text(json.dumps(runs, indent=2, default=str))
    return {"runs": runs, "markdown": text}


def compare(runs: Sequence[dict[str, Any]]) -> str:
    """Stateful turns/s of every deployment at each concurrency, side by side (issue 19:
    Postgres beside SQLite, and 2 processes ≥ 1 on Postgres)."""
    labels = [Deployment(**r["deployment"]).label for r in runs]
    levels = sorted({row["concurrency"] for r in runs for row in r["rows"]})
    table = []
    for c in levels:
        cells = []
        for r in runs:
            row = _by(r["rows"], "stateful", c)
            cells.append(f"{row['rps']:,.0f}" if row else "–")
        table.append([str(c), *cells])
    return "\n".join(["## Stateful turns/s by deployment (same run)", "",
                      markdown_table(["concurrency", *labels], table)])


def run_one(args: argparse.Namespace, deployment: Deployment, *, alone: bool = True
            ) -> dict[str, Any]:
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    info = machine_info()
    src = args.memproxy_src
    if src is not None:
        if not (src / "proxy" / "__init__.py").is_file():
            raise SystemExit(f"--memproxy-src {src}: no proxy/ package there")
        info["bench_commit"], info["commit"] = info["commit"], git_commit(src)
    eprint(f"throughput: {deployment.label}, concurrency {concurrencies}, "
           f"{args.duration:g}s per run" + (f", memproxy from {src}" if src else ""))
    with ThroughputStack(deployment, src) as stack:
        rows = sweep(stack, modes=MODES, concurrencies=concurrencies, duration=args.duration,
                     warmup=args.warmup, agents=args.agents)
    summary = analyse(rows)
    text = render(info, deployment, rows, summary)
    result = {"machine": info, "config": vars(args) | {"out": str(args.out)},
              "deployment": vars(deployment), "rows": rows, "summary": summary,
              "markdown": text}
    if args.out:
        out = args.out if alone else args.out / f"{deployment.backend}-{deployment.workers}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps(result, indent=2, default=str))
        (out / "throughput.md").write_text(text + "\n")
        plot(out / "throughput.png", rows, f"memproxy throughput ({deployment.label})")
    return result


def main(argv: list[str] | None = None) -> int:
    exit_on_signals()
    result = run(build_parser().parse_args(argv))
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
