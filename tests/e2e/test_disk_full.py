"""A full disk (issue #21.6): writes fail with a clear 507 `insufficient_storage` in the OpenAI
error shape (never a 500 with a traceback), `/health/readiness` reports not ready, and once
space returns both recover without a restart.

The disk is real: a small tmpfs mounted for the test holds the database — the SQLite file, or
a Postgres tablespace the test database is moved to (the server must run on this machine) —
and a filler file takes every free byte (ENOSPC: SQLite says SQLITE_FULL, Postgres
`disk_full`, SQLSTATE 53100); deleting the filler gives the space back. Mounting needs root
(CAP_SYS_ADMIN): elsewhere the test is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import storage
from tests.fakes import Reply
from tests.openapi_check import validate_error
from tests.servers import run_memproxy_subprocess

MODEL = "gpt-4o-mini"
BIG = "a long message that needs room on the disk " * 2000  # ~90 KB, more than the WAL holds


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m", owner: str = "") -> Iterator[Path]:
    where.mkdir()
    options = f"size={size},mode=0755" + (f",{owner}" if owner else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file; return it (delete it to give space back)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with contextlib.suppress(OSError), open(filler, "ab") as f:  # the last partial block
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler


@pytest.fixture
def full_disk_database(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(database URL, the small disk that holds it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if database_url.startswith("sqlite"):
        with small_disk(tmp_path / "disk") as where:
            yield f"sqlite:///{where}/memproxy.db", where
        return
    # Postgres: the server process writes the files, so the disk is a tablespace it owns
    import pwd

    from tests.store_backends import _admin, postgres_server_url

    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no local postgres user: the server is not on this machine")
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    space = f"memproxy_full_{secrets.token_hex(4)}"
    with small_disk(Path(f"/tmp/{space}"), size="16m",
                    owner=f"uid={owner.pw_uid},gid={owner.pw_gid}") as where:
        server = postgres_server_url()
        try:
            asyncio.run(_admin(server, [f"CREATE TABLESPACE {space} LOCATION '{where}'",
                                        f'ALTER DATABASE "{name}" SET TABLESPACE {space}']))
        except Exception as exc:  # a remote server cannot use this machine's tmpfs
            pytest.skip(f"cannot put a tablespace on a local tmpfs: {exc}")
        try:
            yield database_url, where
        finally:
            asyncio.run(_admin(server, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                                        f"DROP TABLESPACE IF EXISTS {space}"]))


def wait_ready(url: str, timeout_s: float = 40.0) -> httpx.Response:
    """Readiness, polled until 200 (Postgres holds "not ready" a while after a failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready = httpx.get(f"{url}/health/readiness", timeout=30)
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.5)


def chat(url: str, agent: str, text: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers={"X-Agent-Id": agent},
                      json={"model": MODEL, "stream": stream,
                            "messages": [{"role": "user", "content": text}]})


def test_a_full_disk_is_a_507_and_not_ready_and_recovers_without_a_restart(
        full_disk_database, fake_upstream):
    url, disk = full_disk_database
    proc = run_memproxy_subprocess(["--database-url", url, "--upstream-url", fake_upstream.url],
                                   env={})
    try:
        fake_upstream.push(Reply(content="first answer"))
        assert chat(proc.url, "full", "hello").status_code == 200
        assert httpx.get(f"{proc.url}/health/readiness", timeout=30).status_code == 200

        filler = fill(disk)
        # (the scripted model answers whatever reaches the upstream; a write may fail before)
        for attempt in (lambda: chat(proc.url, "full", BIG),
                        lambda: chat(proc.url, "full", BIG, stream=True),
                        lambda: httpx.post(f"{proc.url}/v1/agents/full/passages", timeout=30,
                                           json={"text": BIG}),
                        lambda: httpx.post(f"{proc.url}/v1/responses", timeout=30, json={
                            "model": MODEL, "input": BIG, "store": True})):
            response = attempt()
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                assert response.status_code == 200  # the stream had started: an error event
                assert '"code":"insufficient_storage"' in response.text.replace(" ", "")
                continue
            assert response.status_code == 507, response.text
            validate_error(response.json())
            assert response.json()["error"]["code"] == "insufficient_storage"
        ready = httpx.get(f"{proc.url}/health/readiness", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "error: storage full"

        filler.unlink()  # space returns: no restart
        ready = wait_ready(proc.url)
        assert ready.status_code == 200, ready.text
        fake_upstream.push(Reply(content="second answer"))
        again = chat(proc.url, "full", "still there?")
        assert again.status_code == 200, again.text
    finally:
        proc.stop()
    output = proc.output()
    assert "Traceback" not in output
    assert output.count("storage is full") >= 1
    texts = [text for _, text in storage.roles_and_texts(storage.transcript(url, "full"))]
    assert texts == ["hello", "first answer", "still there?", "second answer"]
