"""Helpers shared by the benchmarks: child processes, ports, percentiles, tables, machine info."""

from __future__ import annotations

import atexit
import datetime as _dt
import importlib.metadata
import math
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- processes

_CHILDREN: list[Child] = []


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process in its own session, stopped at exit whatever happens."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, env=dict(env) if env is not None else None, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        _CHILDREN.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode(errors="replace")

    def wait_http(self, url: str, timeout_s: float = 30.0) -> None:
        """Poll `url` until it answers 200; raise with the child's log if it dies or hangs."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout_s}s ({last!r}):\n"
                           f"{self.log_tail()}")

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the child's process group, then SIGKILL after `grace_s`."""
        if self.alive():
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        if self in _CHILDREN:
            _CHILDREN.remove(self)


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the benchmark process dies, even by
    SIGKILL, so no server outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: atexit and finally still apply
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_all_children() -> None:
    for child in list(_CHILDREN):
        try:
            child.stop(grace_s=2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(stop_all_children)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus memproxy/OpenAI settings (so a developer's own config
    cannot change the measurement), plus `extra`, with the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMPROXY_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarize(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": .., "p95": .., "p99": .., "mean": .., "min": .., "max": ..} of `values`."""
    data = sorted(values)
    out = {f"p{q:g}": percentile(data, q) for q in qs}
    out["mean"] = sum(data) / len(data) if data else math.nan
    out["min"] = float(data[0]) if data else math.nan
    out["max"] = float(data[-1]) if data else math.nan
    return out


# --------------------------------------------------------------------------- tables


def fmt_ms(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_delta(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; `align` holds "l" or "r" per column."""
    rows = [[str(c) for c in row] for row in rows]
    headers = [str(h) for h in headers]
    align = list(align or ["l"] + ["r"] * (len(headers) - 1))
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) if rows else len(headers[i])
              for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    rule = "| " + " | ".join(
        ("-" * (widths[i] - 1) + ":") if align[i] == "r" else "-" * widths[i]
        for i in range(len(headers))) + " |"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """`git rev-parse --short HEAD` of the repo (or `root`), with `+dirty` when the tree has
    changes.

    `BENCH_COMMIT` in the environment wins (for a run from an exported tree with no .git).
    """
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    out = commit.stdout.strip()
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=5)
        if status.stdout.strip():
            out += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return out or None


PACKAGES = ("memproxy", "starlette", "uvicorn", "httptools", "uvloop", "httpx", "httpcore",
            "orjson", "aiosqlite", "pydantic", "tiktoken")


def machine_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    mem = _memory_bytes()
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cpus(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "commit": git_commit(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def machine_block(info: Mapping[str, Any]) -> str:
    """The header block printed above a result table."""
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    load = info.get("load_avg")
    load_text = " / ".join(f"{x:.2f}" for x in load) if load else "n/a"
    return "\n".join([
        f"- date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['memory_gib']} GiB RAM, {info['os']}",
        f"- load average before the run (1/5/15 min): {load_text}",
        f"- {info['python']}, SQLite {info['sqlite']}",
        f"- packages: {pkgs}",
        f"- memproxy commit: {info['commit'] or 'unknown'}",
    ])


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks and atexit stop the children."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread, or not supported here
            pass


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
