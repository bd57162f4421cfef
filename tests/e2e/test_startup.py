"""What a newcomer meets first, through the real `memproxy` process (docs/operations.md,
docs/cli.md):

- `serve` logs one banner block: version, database (never its password), upstream (never its
  key), auth mode, the inspector's URL and where the docs are;
- every start-up error is one line and exit status 2, never a traceback: asyncpg missing, a
  Postgres database that does not exist or a server that cannot be reached, an unwritable SQLite
  path, a read-only database file, an unknown URL scheme, an upstream URL that is not one;
- an unknown `MEMPROXY_*` variable is named in a warning (with the closest known name);
- the data commands in local mode never create a SQLite database: a missing one is an error
  naming the path looked for and how to point at the right one, and no file is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from proxy import __version__
from proxy.cli import main
from tests import secrets
from tests.servers import (
    REPO_ROOT,
    _clean_environ,
    free_port,
    refusing_port,
    run_memproxy_subprocess,
)
from tests.store_backends import postgres_url  # noqa: F401  (a fixture)

PASSWORD = secrets.DATABASE_PASSWORD


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands read MEMPROXY_* / OPENAI_* variables: none from the developer's."""
    for name in list(os.environ):
        if name.startswith(("MEMPROXY_", "OPENAI_")):
            monkeypatch.delenv(name)


def with_password(url: str) -> str:
    """`url` carrying `PASSWORD` (the test server trusts its clients, so it is never checked);
    a URL that has a password of its own keeps it."""
    parts = urlsplit(url)
    if parts.password:
        return url
    if parts.username:
        netloc = f"{parts.username}:{PASSWORD}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))
    return urlunsplit(parts._replace(query="&".join(filter(None, [parts.query,
                                                                   f"password={PASSWORD}"]))))


def banner_rows(output: str) -> dict[str, str]:
    """The banner's rows by name, from the line that names the version to the `docs` row."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f"memproxy {__version__}"))
    rows = [line.split(None, 1) for line in lines[start + 1:start + 6]]
    assert all(line.startswith("  ") for line in lines[start + 1:start + 6]), lines[start:]
    return {name: value for name, value in rows}


def test_serve_prints_a_banner_without_secrets(database_url, fake_upstream, tmp_path, capsys):
    url = with_password(database_url) if database_url.startswith("postgres") else database_url
    assert main(["keys", "add", "team-b", "--database-url", url]) == 0
    capsys.readouterr()  # the new key
    config = tmp_path / "memproxy.toml"
    config.write_text(f'[auth]\nadmin_keys = ["{secrets.ADMIN_KEY}"]\n'
                      f'[auth.keys]\n"{secrets.TENANT_A_KEY}" = "team-a"\n')
    args = ["--config", str(config), "--database-url", url, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={"MEMPROXY_UPSTREAM_API_KEY": secrets.UPSTREAM_KEY},
                                 cwd=tmp_path) as proc:
        assert httpx.get(f"{proc.url}/ui/", timeout=10).status_code == 200
        rows = banner_rows(proc.output())
    if database_url.startswith("sqlite"):
        assert rows["database"] == f"SQLite {tmp_path}/memproxy.db"
    else:
        parts = urlsplit(database_url)
        assert rows["database"] == f"Postgres {parts.hostname}:{parts.port or 5432}{parts.path}"
    assert rows["upstream"] == f"{fake_upstream.url} (API key set)"
    assert rows["auth"] == "3 API keys (1 in [auth.keys], 1 admin, 1 from `memproxy keys add`)"
    assert rows["inspector"] == f"{proc.url}/ui/"
    assert rows["docs"].endswith("; API schema at /openapi.json")
    assert PASSWORD not in proc.output()
    assert secrets.find_secrets(proc.output()) == []


def test_an_open_server_says_so_and_names_unknown_variables(fake_upstream, tmp_path):
    env = {"MEMPROXY_DATABSE_URL": "sqlite:///elsewhere.db", "MEMPROXY_PORT": "1",
           "MEMPROXY_LOGGING_FORMAT": "json"}
    args = ["--database-url", f"sqlite:///{tmp_path}/m.db", "--upstream-url",
            fake_upstream.url, "--host", "0.0.0.0", "--allow-open"]
    with run_memproxy_subprocess(args, env=env) as proc:
        pass
    entries = [json.loads(line) for line in proc.output().splitlines() if line.strip()]
    warnings = [e["message"] for e in entries if e["level"] == "WARNING"]
    assert "unknown environment variable MEMPROXY_DATABSE_URL is ignored " \
           "(did you mean MEMPROXY_DATABASE_URL?)" in warnings
    assert "unknown environment variable MEMPROXY_PORT is ignored " \
           "(did you mean MEMPROXY_SERVER_PORT?)" in warnings
    [banner] = [e["message"] for e in entries if e["message"].startswith("memproxy ")]
    rows = banner_rows(banner)  # one log record: one JSON line
    assert rows["auth"].startswith("OPEN to anyone who can reach it")  # test_open_server.py
    assert rows["upstream"] == f"{fake_upstream.url} (no API key)"
    assert rows["inspector"] == f"http://127.0.0.1:{proc.port}/ui/ (listening on all interfaces)"


# -- start-up errors: one line, exit status 2 -----------------------------------------------


def serve_fails(args: list[str], cwd: Path, env: dict[str, str] | None = None,
                pythonpath: Path | None = None) -> str:
    """Run `memproxy serve ARGS`, expect it to stop at once with status 2 and one line of
    output; return that line."""
    environ = _clean_environ(env or {})
    if pythonpath is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(pythonpath)])
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--port", str(free_port()),
                          *args], env=environ, cwd=cwd, capture_output=True, text=True,
                         timeout=60)
    output = out.stdout + out.stderr
    assert "Traceback" not in output, output
    assert out.returncode == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("memproxy: "), output
    assert PASSWORD not in output
    return lines[0]


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """`path` (a file or a directory) cannot be written while the block runs. Root ignores
    permissions, so for root the file gets the immutable attribute (`chattr +i`); where that
    is not possible, the test is skipped."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and `chattr +i` is not available: nothing is read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_asyncpg_missing(tmp_path):
    stub = tmp_path / "site" / "asyncpg"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'asyncpg'\", name='asyncpg')\n")
    line = serve_fails(["--database-url", f"postgresql://memproxy:{PASSWORD}@db:5432/memproxy"],
                       tmp_path, pythonpath=tmp_path / "site")
    assert "Postgres URLs need the asyncpg driver" in line
    assert "pip install 'memproxy[postgres]'" in line


def test_postgres_database_missing(postgres_url, tmp_path):  # noqa: F811
    parts = urlsplit(with_password(postgres_url))
    missing = urlunsplit(parts._replace(path=parts.path + "_missing"))
    line = serve_fails(["--database-url", missing], tmp_path)
    name = parts.path.lstrip("/") + "_missing"
    assert line.startswith(f"memproxy: cannot open the database (Postgres {parts.hostname}:")
    assert f'database "{name}" does not exist (create it first' in line


def test_postgres_unreachable(tmp_path):
    with refusing_port() as port:
        line = serve_fails(
            ["--database-url", f"postgresql://memproxy:{PASSWORD}@127.0.0.1:{port}/memproxy"],
            tmp_path)
    assert line.startswith(
        f"memproxy: cannot open the database (Postgres 127.0.0.1:{port}/memproxy): "
        "cannot reach the Postgres server (")


def test_unwritable_sqlite_paths(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    line = serve_fails(["--database-url", f"sqlite:///{tmp_path}/a-file/sub/m.db"], tmp_path)
    assert line == (f"memproxy: cannot open the database (SQLite {tmp_path}/a-file/sub/m.db): "
                    f"{tmp_path}/a-file is not a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked):
        line = serve_fails(["--database-url", f"sqlite:///{locked}/m.db"], tmp_path)
    assert line == (f"memproxy: cannot open the database (SQLite {locked}/m.db): cannot create "
                    "or open the file: check that its directory is writable")
    assert not (locked / "m.db").exists()


def test_a_read_only_database_file(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/m.db"
    assert main(["migrate", "--database-url", url]) == 0  # up to date: opening writes nothing
    with unwritable(tmp_path / "m.db"):
        line = serve_fails(["--database-url", url], tmp_path)
    assert line.startswith(f"memproxy: cannot open the database (SQLite {tmp_path}/m.db): "
                           "the file is read-only")


@pytest.mark.parametrize("args, expected", [
    (["--database-url", "mysql://root:PASSWORD@db/memproxy"],
     "memproxy: invalid configuration: database.url: unsupported database URL scheme 'mysql': "
     "use sqlite:///path.db or postgresql://host/db"),
    (["--upstream-url", "notaurl"],
     "memproxy: invalid configuration: upstream.base_url: must be an http:// or https:// URL "
     "with a host, such as http://localhost:11434/v1 (got 'notaurl')"),
    (["--config", "CONFIG"],
     "memproxy: invalid configuration: upstream.base_url: must be an http:// or https:// URL "
     "with a host, such as http://localhost:11434/v1 (got 'localhost:11434/v1')"),
])
def test_bad_urls(tmp_path, args, expected):
    config = tmp_path / "memproxy.toml"
    config.write_text('[upstream]\nbase_url = "localhost:11434/v1"\n')
    args = [str(config) if a == "CONFIG" else a.replace("PASSWORD", PASSWORD) for a in args]
    assert serve_fails(args, tmp_path) == expected


# -- local mode never creates a database ----------------------------------------------------


def local_commands(tmp_path: Path) -> list[list[str]]:
    """A command of every group that can run in local mode, with valid arguments."""
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nSomething.\n")
    document = tmp_path / "ada.json"
    document.write_text('{"format": "memproxy.agent", "agent": {"id": "ada"}}')
    return [["agents", "ls"], ["agents", "show", "ada"], ["agents", "create", "ada"],
            ["memory", "show", "ada"], ["memory", "set", "ada", "human", "x"],
            ["memory", "history", "ada", "human"], ["messages", "ada"], ["export", "ada"],
            ["import", str(document)], ["load", "ada", str(notes)], ["chat", "ada"],
            ["ab", str(REPO_ROOT / "examples" / "ab" / "facts.toml")]]


def test_local_mode_refuses_a_missing_sqlite_database(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "sub" / "missing.db"
    hint = ("point at yours with --database-url, $MEMPROXY_DATABASE_URL or --config, or "
            "create this one with `memproxy migrate`")
    expected = f"memproxy: no database at {missing} (from --database-url); {hint}\n"
    for argv in local_commands(tmp_path):
        code = main([*argv, "--database-url", f"sqlite:///{missing}"])
        assert (code, capsys.readouterr().err) == (2, expected), argv
    assert not (tmp_path / "sub").exists()

    monkeypatch.setenv("MEMPROXY_DATABASE_URL", f"sqlite:///{missing}")
    assert main(["agents", "ls"]) == 2
    assert capsys.readouterr().err == \
        f"memproxy: no database at {missing} (from $MEMPROXY_DATABASE_URL); {hint}\n"
    monkeypatch.delenv("MEMPROXY_DATABASE_URL")
    config = tmp_path / "memproxy.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{missing}"\n')
    assert main(["agents", "ls", "--config", str(config)]) == 2
    assert capsys.readouterr().err == \
        f"memproxy: no database at {missing} (from [database] url in {config}); {hint}\n"
    assert not (tmp_path / "sub").exists()

    assert main(["migrate", "--database-url", f"sqlite:///{missing}"]) == 0  # creates it
    capsys.readouterr()
    assert main(["agents", "ls", "--database-url", f"sqlite:///{missing}"]) == 0
    assert capsys.readouterr().out.endswith("(no agents)\n")


def test_local_mode_from_another_folder(tmp_path):
    """The issue's case: a data command run where there is no database, with a typo'd
    variable. The process says what it looked for and leaves nothing behind."""
    env = _clean_environ({"MEMPROXY_DATABSE_URL": f"sqlite:///{tmp_path}/real.db"})
    out = subprocess.run([sys.executable, "-m", "proxy", "agents", "show", "ada"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "memproxy: warning: unknown environment variable MEMPROXY_DATABSE_URL is ignored "
        "(did you mean MEMPROXY_DATABASE_URL?)",
        f"memproxy: no database at {tmp_path}/memproxy.db (the default sqlite:///memproxy.db, "
        "in the current directory); point at yours with --database-url, "
        "$MEMPROXY_DATABASE_URL or --config, or create this one with `memproxy migrate`",
    ]
    assert list(tmp_path.iterdir()) == []
