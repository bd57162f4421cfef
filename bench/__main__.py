"""`python -m bench SUBCOMMAND [options]`: run one benchmark.

Each subcommand is a module of this package with a `main(argv) -> int`; add new ones (paging,
throughput, ...) to `COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "all": ("bench.suite", "overhead, throughput and search, with every target of issue #5"),
    "overhead": ("bench.overhead", "latency overhead over a zero-latency upstream"),
    "paging": ("bench.paging", "prompt tokens per turn over a long conversation vs a raw client"),
    "paging-latency": ("bench.paging_latency",
                       "turn latency p50/p95/max over a long chat with compactions"),
    "throughput": ("bench.throughput", "turns per second vs the bare relay, and peak memory"),
    "search": ("bench.search", "archival and recall search p50/p99 at 10k and 100k items"),
    "compare": ("bench.compare", "two overhead.json files side by side (before/after a change)"),
    "recall": ("bench.recall", "recall@k / hit@k on LoCoMo conversations: full-text vs hybrid"),
    "scale": ("bench.scale", "turns per second with 1, 2, 4 processes on Postgres vs SQLite"),
}


def usage() -> str:
    lines = ["usage: python -m bench --out DIR            (the whole suite, see `all`)",
             "       python -m bench SUBCOMMAND [options]   (SUBCOMMAND --help for its options)",
             "", "subcommands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0].startswith("--out"):  # `python -m bench --out DIR`: the whole suite
        argv = ["all", *argv]
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
