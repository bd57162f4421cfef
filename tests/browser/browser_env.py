"""Finding headless Chromium, Node and playwright-core for the browser tests.

Locally, a machine without Chromium or Node skips the browser test with the reason. CI sets
`MEMPROXY_REQUIRE_BROWSER=1` (.ci/run installs Debian's `chromium` first), and then a missing
piece FAILS the test instead, so a broken install cannot pass as a skip. playwright-core comes
from tests/node's lockfile (`npm ci`, run here when node_modules is missing); it never downloads
a browser of its own: the test drives the system Chromium through `executablePath`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
PLAYWRIGHT_PACKAGE = NODE_DIR / "node_modules" / "playwright-core" / "package.json"
REQUIRE_ENV = "MEMPROXY_REQUIRE_BROWSER"
CHROMIUM_ENV = "MEMPROXY_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
MIN_NODE_MAJOR = 20  # playwright-core's engines field
INSTALL_TIMEOUT_S = 300


def required() -> bool:
    """True when a missing browser must fail the test (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip with `reason` locally; fail with it when the browser is required."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so the browser test may not be skipped)",
                    pytrace=False)
    pytest.skip(f"no headless browser here: {reason}")


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def chromium() -> str:
    """The Chromium executable: `$MEMPROXY_CHROMIUM`, else /usr/bin/chromium or PATH."""
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    candidates = (configured,) if configured else CHROMIUM_CANDIDATES
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    unavailable(f"no Chromium at {' or '.join(candidates)} "
                "(apt-get install chromium, or set MEMPROXY_CHROMIUM)")
    raise AssertionError("unreachable")


def node() -> str:
    """`node` (major version >= 20) with playwright-core installed in tests/node."""
    executable = shutil.which("node")
    if executable is None:
        unavailable("`node` is not on PATH")
    version = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        unavailable(f"node {version or '?'} is older than {MIN_NODE_MAJOR}")
    if PLAYWRIGHT_PACKAGE.is_file():
        return str(executable)
    npm = shutil.which("npm")
    if npm is None:
        unavailable(f"{PLAYWRIGHT_PACKAGE.parent} is missing and `npm` is not on PATH")
    command = [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError) as exc:
        pytest.fail(f"`{' '.join(command)}` did not complete: {exc}", pytrace=False)
    if done.returncode != 0 or not PLAYWRIGHT_PACKAGE.is_file():
        pytest.fail(f"`{' '.join(command)}` failed (exit {done.returncode}):\n"
                    f"{_tail(done.stdout + done.stderr)}", pytrace=False)
    return str(executable)


def run_script(script: Path, args: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """Run a browser script (`node SCRIPT ARGS` with `env` over the process environment) and
    return the one JSON line it prints on success; a timeout, a non-zero exit or any other
    output fails the test with the script's output."""
    try:
        done = subprocess.run([node(), str(script), *args], cwd=script.parent,
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {script.name} did not finish within {timeout_s} s; "
                    f"stdout: {exc.stdout!r}; stderr: {exc.stderr!r}", pytrace=False)
    assert done.returncode == 0, (f"node {script.name} exited {done.returncode}\n"
                                  f"stderr:\n{_tail(done.stderr, 6000)}\n"
                                  f"stdout:\n{_tail(done.stdout, 6000)}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got: {done.stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True, summary
    return summary
