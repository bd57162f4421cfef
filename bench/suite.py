"""`python -m bench all --out DIR`: every benchmark of issue #5 in one run, and one report.

Runs overhead (pass-through and stateful, non-stream and stream, at 0 / 1k / 10k / 100k stored
messages), throughput (concurrency sweep against the bare relay, peak RSS) and search
(archival and recall at 10k / 100k items) one after the other, each writing its Markdown, JSON
and PNG into DIR, then writes DIR/summary.md: every target of issue #5 beside the measured
figure, met or missed. `--quick` shrinks every run for a smoke test (the figures are then
rough). Paging (`python -m bench paging`) and scale-out (`python -m bench scale`) are separate
commands: they answer other issues' questions and take several minutes each.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from .common import eprint, exit_on_signals, machine_block, machine_info, markdown_table

PARTS = ("overhead", "throughput", "search")


def _args(part: str, out: Path, quick: bool) -> list[str]:
    if part == "overhead":
        return (["--requests", "100", "--warmup", "20", "--stored", "1000,10000"] if quick
                else ["--requests", "500"]) + ["--out", str(out)]
    if part == "throughput":
        return (["--concurrency", "1,8", "--duration", "2"] if quick else []) + ["--out", str(out)]
    return (["--sizes", "10000"] if quick else []) + ["--out", str(out)]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _verdict(value: float | None, target: float, lower_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "**missed**"


def _both(own: float | None, end_to_end: float | None, target: float) -> str:
    """Overhead is judged on both measures: memproxy's own time and end-to-end − direct."""
    mine, whole = _verdict(own, target), _verdict(end_to_end, target)
    if mine == whole:
        return mine
    return f"{mine} on own time, {whole} end-to-end"


def targets(out: Path) -> list[list[str]]:
    """One row per target of issue #5: what, target, measured, verdict."""
    rows: list[list[str]] = []
    overhead = _load(out / "overhead.json")
    if overhead:
        res = overhead["results"]
        for key in [k for k in res if k.startswith("c") and not k.endswith("-in")]:
            own = res[key]["memproxy_header_ms"] or {}
            delta = res[key]["overhead_ms"] or {}
            for q, target in (("p50", 2.0), ("p99", 10.0)):
                rows.append([f"stateful overhead {q}, {key} (own time / end-to-end − direct)",
                             f"≤ {target:g} ms",
                             f"{own.get(q, float('nan')):.2f} / {delta.get(q, float('nan')):.2f}",
                             _both(own.get(q), delta.get(q), target)])
        stream = res.get("s-c0")
        if stream and stream["overhead_ms"]:
            value = stream["overhead_ms"]["p50"]
            rows.append(["streaming TTFT overhead p50 (end-to-end − direct)", "≤ 3 ms",
                         f"{value:.2f}", _verdict(value, 3.0)])
    throughput = _load(out / "throughput.json")
    if throughput:
        summary = throughput["summary"]
        ratio = summary["stateful_over_relay"]
        rows.append(["stateful throughput / bare relay", "≥ 50%",
                     f"{ratio:.1%}" if ratio is not None else "–",
                     _verdict(ratio, 0.5, lower_is_better=False)])
        rows.append(["peak RSS under the throughput run", "≤ 250 MB",
                     f"{summary['peak_rss_mb']:.0f} MB", _verdict(summary["peak_rss_mb"], 250)])
    search = _load(out / "search.json")
    if search:
        for row in search.get("rows", []):
            if row.get("items") == max(r.get("items", 0) for r in search["rows"]):
                rows.append([f"search p99, {row.get('kind')} {row.get('mode', '')} "
                             f"{row.get('backend', '')} at {row['items']:,}",
                             "≤ 50 ms", f"{row['p99_ms']:.1f} ms", _verdict(row["p99_ms"], 50)])
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for every result")
    parser.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(PARTS)}")
    return parser


def main(argv: list[str] | None = None) -> int:
    exit_on_signals()
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(PARTS)
    failed = []
    for part in parts:
        try:
            module = importlib.import_module(f"bench.{part}")
        except ImportError as exc:
            eprint(f"skipping {part}: {exc}")
            continue
        eprint(f"=== {part}")
        try:
            module.main(_args(part, args.out, args.quick))
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            eprint(f"{part} failed: {exc!r}")
            failed.append(part)
    sections = ["# memproxy benchmarks", "", machine_block(machine_info()), "",
                "## Targets (issue #5)", "",
                markdown_table(["what", "target", "measured", "verdict"], targets(args.out),
                               align=["l", "r", "r", "l"]), ""]
    for part in parts:
        md = args.out / f"{part}.md"
        if md.exists():
            sections += [md.read_text(), ""]
    (args.out / "summary.md").write_text("\n".join(sections))
    print("\n".join(sections))
    eprint(f"wrote {args.out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
