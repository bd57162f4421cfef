"""The processes a benchmark measures: the fake upstream and memproxy on a fresh database."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from .common import REPO_ROOT, Child, child_env, eprint, free_port
from .fake_upstream import DEFAULT_CONTEXT_WINDOW
from .scenarios import UPSTREAM_KEY

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
    """Fake upstream + memproxy on a fresh SQLite file in a temporary directory (or `db_url`).

    `prepare(db_url)` runs before memproxy starts (to pre-populate the database). Use as a
    context manager; everything is stopped and deleted on exit (and at interpreter exit).
    """

    def __init__(self, prepare: Callable[[str], None] | None = None,
                 memproxy_env: dict[str, str] | None = None, keep_dir: bool = False,
                 memproxy_cmd: Sequence[str] | None = None,
                 context_window: int = DEFAULT_CONTEXT_WINDOW,
                 upstream_args: Sequence[str] = (), memproxy_src: Path | None = None,
                 db_url: str | None = None) -> None:
        self.prepare = prepare
        self.context_window = context_window
        self.upstream_args = list(upstream_args)  # extra options for bench.fake_upstream
        self.memproxy_env = memproxy_env or {}
        # What runs `serve ...`; a profiler can wrap it, e.g.
        # ["py-spy", "record", "-o", "out.svg", "--", sys.executable, "-m", "proxy"].
        self.memproxy_cmd = list(memproxy_cmd or [sys.executable, "-m", "proxy"])
        self.keep_dir = keep_dir
        # Another source tree to run memproxy from (a before/after comparison); its directory is
        # both the child's working directory and its PYTHONPATH, so `-m proxy` finds its own.
        self.memproxy_src = memproxy_src.resolve() if memproxy_src else None
        sweep_stale_dirs()
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        (self.tmp / "owner.pid").write_text(str(os.getpid()))
        # a fresh SQLite file unless given (bench.infra.postgres_database for Postgres)
        self.db_url = db_url or f"sqlite:///{self.tmp / 'bench.db'}"
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
        if self.memproxy_src is not None:
            env["PYTHONPATH"] = str(self.memproxy_src)
        self.memproxy = Child(
            "memproxy",
            [*self.memproxy_cmd, "serve", "--host", "127.0.0.1",
             "--port", str(mp_port), "--database-url", self.db_url,
             "--upstream-url", f"{self.upstream_url}/v1"],
            env=env, log_path=self.tmp / "memproxy.log", cwd=self.memproxy_src,
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

