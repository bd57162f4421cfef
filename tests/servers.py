"""Real servers for end-to-end tests: an ASGI app in a uvicorn thread, or memproxy as a process.

- `ServerThread(app)` serves any ASGI app with uvicorn on 127.0.0.1 (ephemeral port) in a
  background thread with its own event loop. `start()`/`stop()`, `.url`, context manager.
- `AppSwitch` is an ASGI app that forwards to a replaceable target, so one long-lived server
  can front a fresh fake per test.
- `run_memproxy_subprocess(args, env)` starts `python -m proxy serve ...` and waits until
  `GET /health/liveliness` answers 200; the returned `ProcessHandle` can `stop()` (SIGTERM,
  then SIGKILL) or `kill()` (SIGKILL) it, for restart and crash tests. Each process's output
  is handed to `OUTPUT_SINK` once it has exited (tests/conftest.py points it at the session's
  run log, which is checked for secrets); `collect_process_output()` sweeps the rest.
- `UpstreamGate(app, after_chunks)` wraps a fake upstream so that chat completion responses
  stop after `after_chunks` body messages until the test calls `release()`: a slow upstream
  whose pace the test controls, without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO_ROOT = Path(__file__).resolve().parents[1]

# Receives each memproxy subprocess's output once (set by tests/conftest.py).
OUTPUT_SINK: Callable[[str], None] | None = None
_STARTED: list[ProcessHandle] = []


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread (own event loop, ephemeral port)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 15.0,
        graceful_shutdown_s: float = 3.0,
    ) -> None:
        self.app = app
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level="warning",
            loop="asyncio",
            timeout_graceful_shutdown=graceful_shutdown_s,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port: int | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # SystemExit on startup failure, or a crash
            self._error = exc

    def start(self) -> ServerThread:
        """Start serving; return once uvicorn accepts connections (or raise RuntimeError)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"uvicorn failed to start {self.app!r}: "
                    f"{self._error!r} (lifespan startup failure or bind error; see log above)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"uvicorn did not start {self.app!r} within {self.startup_timeout_s} s"
                )
            time.sleep(0.005)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit (runs the lifespan shutdown) and join the thread."""
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(5.0)
        self._thread = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash)."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AppSwitch:
    """An ASGI app forwarding HTTP traffic to `self.target`, which tests may replace.

    It answers the lifespan protocol itself, so targets must not need a lifespan.
    """

    def __init__(self, target: Any = None) -> None:
        self.target = target

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.target is None:
            raise RuntimeError("AppSwitch has no target")
        await self.target(scope, receive, send)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port bound but not listening for as long as the block runs: connections to it are
    refused at once, and no other socket can take it meanwhile (unlike a merely free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


class ProcessHandle:
    """A memproxy server process started by `run_memproxy_subprocess`."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, host: str) -> None:
        self.proc = proc
        self.port = port
        self.host = host
        self.log_path = log_path
        self._final_output: str | None = None
        self._collected = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._final_output is not None:
            return self._final_output
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; return the exit code.

        The log file is then read into memory (`output()` still works) and removed.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        if self._final_output is None:
            self._final_output = self.output()
            self.log_path.unlink(missing_ok=True)
        self._collect()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL at once (a crash); return the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        self._collect()
        return self.proc.returncode

    def _collect(self) -> None:
        """Hand the output of the exited process to `OUTPUT_SINK`, once."""
        if self._collected or self.proc.poll() is None:
            return
        self._collected = True
        if OUTPUT_SINK is not None:
            OUTPUT_SINK(f"--- memproxy subprocess {self.pid} output ---\n{self.output()}\n")

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _clean_environ(env: dict[str, str]) -> dict[str, str]:
    """The current environment without MEMPROXY_*/OPENAI_* variables, updated with `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MEMPROXY_", "OPENAI_"))}
    base.update(env)
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), base.get("PYTHONPATH", "")) if p
    )
    base.setdefault("PYTHONUNBUFFERED", "1")
    return base


def run_memproxy_subprocess(
    args: list[str],
    env: dict[str, str],
    *,
    startup_timeout_s: float = 15.0,
    cwd: str | Path | None = None,
) -> ProcessHandle:
    """Start `python -m proxy serve *args` and wait until `/health/liveliness` answers 200.

    `--host 127.0.0.1` and a free `--port` are added unless `args` sets them. The child gets
    the current environment minus `MEMPROXY_*`/`OPENAI_*` variables, plus `env`. Output goes
    to a temporary log file (`handle.output()`), quoted in the error if start-up fails.
    """
    host = "127.0.0.1"
    args = list(args)
    if "--host" in args:
        host = args[args.index("--host") + 1]
    else:
        args += ["--host", host]
    if "--port" in args:
        port = int(args[args.index("--port") + 1])
    else:
        port = free_port(host)
        args += ["--port", str(port)]
    fd, name = tempfile.mkstemp(prefix="memproxy-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", *args],
            env=_clean_environ(env),
            cwd=str(cwd) if cwd is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = ProcessHandle(proc, port, log_path, host)
    _STARTED.append(handle)
    deadline = time.monotonic() + startup_timeout_s
    last_error = "no attempt"
    with httpx.Client(timeout=1.0) as http:
        while True:
            if proc.poll() is not None:
                handle.stop()
                raise RuntimeError(
                    f"memproxy exited with code {proc.returncode} during start-up "
                    f"(args {args}); output:\n{handle.output()}"
                )
            try:
                response = http.get(f"{handle.url}/health/liveliness")
                if response.status_code == 200:
                    return handle
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                handle.kill()
                handle.stop()
                raise RuntimeError(
                    f"memproxy did not answer /health/liveliness within {startup_timeout_s} s "
                    f"(last: {last_error}); output:\n{handle.output()}"
                )
            time.sleep(0.05)


def collect_process_output() -> None:
    """Stop every memproxy subprocess still running and hand all output not yet collected to
    `OUTPUT_SINK` (the end of the session)."""
    for handle in _STARTED:
        handle.stop()
    _STARTED.clear()


class UpstreamGate:
    """An ASGI wrapper holding chat completion responses of `app` until `release()`.

    Each response to `POST .../chat/completions` (only those whose request headers satisfy
    `hold_if`, when given) is held before its body message number `after_chunks` (0: before
    any body; for a stream, `after_chunks=k` lets the first k events through). `held` is set
    once a response is waiting at the gate.
    """

    def __init__(
        self,
        app: Any,
        after_chunks: int = 0,
        hold_if: Callable[[dict[str, str]], bool] | None = None,
    ) -> None:
        self.app = app
        self.after_chunks = after_chunks
        self.hold_if = hold_if
        self.held = threading.Event()
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hold_if is not None and not self.hold_if(headers):
            await self.app(scope, receive, send)
            return
        sent = 0

        async def gated_send(message: dict) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                if sent == self.after_chunks:
                    self.held.set()
                    while not self._open.is_set():
                        await asyncio.sleep(0.01)
                sent += 1
            await send(message)

        await self.app(scope, receive, gated_send)


def run_concurrently(count: int, call: Callable[[int], object]) -> list[BaseException]:
    """Run `call(0) … call(count-1)` in `count` threads at once; return the exceptions raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            call(i)
        except Exception as exc:  # collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@contextlib.contextmanager
def scripted_upstream(server: ServerThread, switch: AppSwitch) -> Iterator[Any]:
    """A fresh `FakeUpstream` served by a long-lived server through its `AppSwitch`, reachable
    at `fake.url` (…/v1) until the block ends (a server start per test would cost seconds)."""
    from tests.fakes import FakeUpstream

    fake = FakeUpstream()
    fake.url = f"{server.url}/v1"
    switch.target = fake.app
    try:
        yield fake
    finally:
        switch.target = None


@contextlib.contextmanager
def memproxy_processes(database_url: str, upstream_url: str, env: dict[str, str]
                       ) -> Iterator[Callable[[], ProcessHandle]]:
    """A starter of memproxy processes on one database and upstream (crash and multi-process
    tests start, kill and restart several); every one started is stopped on exit."""
    started: list[ProcessHandle] = []

    def start() -> ProcessHandle:
        handle = run_memproxy_subprocess(
            ["--database-url", database_url, "--upstream-url", upstream_url], env=env)
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in started:
            handle.stop()
