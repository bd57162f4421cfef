"""Scale-out: stateful turns per second with 1, 2 and 4 memproxy processes on one Postgres, against
one process on SQLite, with a model that takes `--latency-ms` (default 50 ms) to answer
(prints a table; not a test).

Each deployment is `memproxy serve --workers N` (N processes sharing one database, as several
machines would) behind the same fake upstream and load generator as `bench throughput`; many
agents, so conversations rarely wait for each other's leases. With a 50 ms model, one process
spends most of a turn waiting, so the question is how many turns the processes and the
database can keep in flight: throughput should grow with processes until the database (or, on
a two-core machine, the CPU) saturates.

    python -m bench scale [--concurrency 64] [--duration 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import eprint, exit_on_signals, fmt_ms, machine_block, machine_info, markdown_table
from .infra import RssSampler
from .throughput import Deployment, ThroughputStack, load

DEPLOYMENTS = [Deployment("sqlite", 1), Deployment("postgres", 1), Deployment("postgres", 2),
               Deployment("postgres", 4)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run")
    parser.add_argument("--agents", type=int, default=500, help="distinct agents")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fake model latency")
    parser.add_argument("--deployments", default="sqlite:1,postgres:1,postgres:2,postgres:4",
                        help="comma-separated BACKEND:PROCESSES (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="directory for scale.json/.md/.png")
    return parser


def parse_deployments(text: str, latency_ms: float) -> list[Deployment]:
    out = []
    for item in text.split(","):
        backend, _, workers = item.strip().partition(":")
        out.append(Deployment(backend, int(workers or 1), latency_ms))
    return out


def render(info: dict[str, Any], args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    base = next((r["rps"] for r in rows if r["deployment"].startswith("postgres × 1")), None)
    ceiling = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else None
    table = [[r["deployment"], f"{r['rps']:.0f}",
              f"{r['rps'] / base:.2f}×" if base else "–",
              fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]), r["errors"],
              f"{r['peak_rss_mb']:.0f}"] for r in rows]
    lines = ["## Scale-out", "", machine_block(info),
             f"- model latency {args.latency_ms:g} ms, {args.concurrency} connections, "
             f"{args.agents} agents, {args.duration:g} s per deployment"
             + (f"; the latency alone caps throughput at {ceiling:,.0f} turns/s"
                if ceiling else ""), "",
             markdown_table(["deployment", "turns/s", "vs postgres × 1", "p50 ms", "p99 ms",
                             "errors", "peak RSS MB (all processes)"], table)]
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        eprint("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["deployment"] for r in rows], [r["rps"] for r in rows], color="#4472c4")
    ax.set_ylabel("stateful turns per second")
    ax.set_title("memproxy scale-out (50 ms model)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    rows = []
    for deployment in parse_deployments(args.deployments, args.latency_ms):
        eprint(f"scale: {deployment.label}")
        with ThroughputStack(deployment) as stack:
            assert stack.memproxy is not None
            with RssSampler(stack.memproxy.pid) as rss:
                result = load(stack.memproxy_url, "stateful", args.concurrency, args.duration,
                              args.warmup, args.agents)
        result |= {"deployment": deployment.label, "peak_rss_mb": rss.peak / 2**20}
        eprint(f"  {result['rps']:.1f} turns/s, p50 {fmt_ms(result['p50_ms'])} ms, "
               f"errors {result['errors']}")
        rows.append(result)
    text = render(info, args, rows)
    result = {"machine": info, "config": vars(args) | {"out": str(args.out)}, "rows": rows,
              "markdown": text}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(result, indent=2, default=str))
        (args.out / "scale.md").write_text(text + "\n")
        plot(args.out / "scale.png", rows)
    return result


def main(argv: list[str] | None = None) -> int:
    exit_on_signals()
    print(run(build_parser().parse_args(argv))["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
