"""What the CLI checks and says before it touches a database: the banner of `memproxy serve`,
one-line database errors, and the refusal to create a SQLite file by accident.

Why this module exists:
- uvicorn runs the app's lifespan and answers any exception there (asyncpg missing, a database
  that does not exist, a read-only file) with a traceback of 16-55 lines and exit status 3.
  `serve` therefore opens the store once itself first (`check_database`, which applies pending
  migrations exactly as the lifespan would), turns a failure into one line with exit status 2,
  as configuration errors are, and only then hands over to uvicorn.
- Opening a store creates a missing SQLite file. That is right for `serve` and `migrate`, but
  a data command run from another folder would silently make an empty `./memproxy.db` and then
  answer "no agent 'ada'": local mode requires the file to exist (`require_database`).
- A newcomer needs to see which database, upstream and auth mode a server uses, and where
  the inspector is: `banner`. It never shows a password, a key or a URL's query string.
- With no API key anywhere every caller is an admin. That is fine on 127.0.0.1 (the default)
  but a `docker run -p` or `--host 0.0.0.0` would silently serve every agent to the network:
  `check_exposure` refuses that unless it was asked for (`--allow-open`), and the banner then
  says the server is open to anyone who can reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import sqlite3
from importlib import metadata
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..config import DatabaseSettings, Settings
from .common import CONFIG_ENV, CliError

DATABASE_ENV = "MEMPROXY_DATABASE_URL"
DOCS_FALLBACK = "README.md and docs/ in the memproxy source"
_ALL_INTERFACES = ("", "0.0.0.0", "::", "[::]")


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_file(url: str) -> str:
    """The absolute path of a SQLite URL (ValueError for a malformed one)."""
    from ..store import sqlite_path

    return os.path.abspath(sqlite_path(url))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def database_label(url: str) -> str:
    """`SQLite /abs/path.db` or `Postgres host:port/db`: no user, password or query."""
    if not is_postgres(url):
        try:
            return f"SQLite {_sqlite_file(url)}"
        except ValueError:
            return "SQLite (invalid URL)"
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host") or "localhost"
    try:
        port = parts.port or query.get("port") or 5432
    except ValueError:
        port = "?"
    name = parts.path.lstrip("/") or query.get("dbname") or "(default database)"
    return f"Postgres {_host(host)}:{port}/{name}"


def _secrets_of(url: str) -> list[str]:
    """The password a database URL carries (in its user info or its query), if any."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += parse_qs(parts.query).get("password", [])
    return [s for s in found if s]


def _not_a_directory(path: str) -> str:
    """The ancestor of `path` that exists but is a file (what stops `makedirs`)."""
    here = path
    while here and here != os.path.dirname(here):
        if os.path.exists(here) and not os.path.isdir(here):
            return here
        here = os.path.dirname(here)
    return path


def _reason(url: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError):
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
            return ("the file is read-only; memproxy writes to it (and creates -wal and -shm "
                    "files next to it): make the file and its directory writable")
        if name.startswith("SQLITE_CANTOPEN"):
            return "cannot create or open the file: check that its directory is writable"
        return str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and not is_postgres(url):
        return f"{_not_a_directory(str(exc.filename))} is not a directory"
    if isinstance(exc, OSError) and not is_postgres(url):
        what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return f"cannot create the file's directory ({what})"
    if kind == "InvalidCatalogNameError":
        return f"{exc} (create it first, e.g. `createdb NAME`, or fix the URL)"
    if isinstance(exc, (OSError, TimeoutError)):  # asyncpg: refused, unknown host, timeout
        return f"cannot reach the Postgres server ({exc or kind})"
    return str(exc) or kind


def database_error(url: str, exc: BaseException) -> str:
    """One line saying which database could not be opened and why (never its password)."""
    if isinstance(exc, ValueError):  # ours: asyncpg missing, a malformed URL, an fts config
        message = f"cannot open the database: {exc}"
    else:
        message = f"cannot open the database ({database_label(url)}): {_reason(url, exc)}"
    message = " ".join(message.split())
    for secret in _secrets_of(url):
        message = message.replace(secret, "***")
    return message


def _probe_write(path: str) -> None:
    """Raise if SQLite cannot write `path`: a store that needs no migration opens a read-only
    file without complaint, and the first turn would fail instead."""
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE memproxy_write_probe (x)")
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()


async def check_database(settings: Settings) -> int:
    """Open the store as the server will (creating and migrating it), make sure it can be
    written, and return the number of API keys stored in it. Any failure: CliError, exit 2."""
    from ..store import open_store

    url = settings.database.url
    try:
        if not is_postgres(url):
            # before the store: a failed aiosqlite connect leaves a thread that prints its
            # own traceback once the loop is gone
            path = _sqlite_file(url)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _probe_write(path)
        store = open_store(url, sqlite_synchronous=settings.database.sqlite_synchronous,
                           postgres_input_commit=settings.database.postgres_input_commit)
        await store.open()
        try:
            stored_keys = await store.count_api_keys()
        finally:
            await store.close()
    except Exception as exc:  # every failure here is the database's (URL, file, server, driver)
        raise CliError(database_error(url, exc), code=2) from exc
    return stored_keys


def database_source(args: argparse.Namespace, settings: Settings) -> str:
    """Where the database URL came from, in the words of the option that set it."""
    if getattr(args, "database_url", None):
        return "from --database-url"
    if os.environ.get(DATABASE_ENV):
        return f"from ${DATABASE_ENV}"
    config = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if config and settings.database.url != DatabaseSettings().url:
        return f"from [database] url in {config}"
    return f"the default {DatabaseSettings().url}, in the current directory"


def require_database(args: argparse.Namespace, settings: Settings) -> None:
    """Local mode: a SQLite database must exist already (see the module doc). Postgres
    databases are never created by memproxy; their errors come from opening them."""
    url = settings.database.url
    if is_postgres(url):
        return
    try:
        path = _sqlite_file(url)
    except ValueError as exc:
        raise CliError(f"cannot open the database: {exc}", code=2) from exc
    if not os.path.exists(path):
        raise CliError(
            f"no database at {path} ({database_source(args, settings)}); point at yours with "
            f"--database-url, ${DATABASE_ENV} or --config, or create this one with "
            "`memproxy migrate`", code=2)


def _upstream_label(settings: Settings) -> str:
    upstream = settings.upstream
    parts = urlsplit(upstream.base_url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="")
    if upstream.api_key and upstream.forward_client_key:
        key = "API key set; a client's own key is forwarded"
    elif upstream.api_key:
        key = "API key set"
    elif upstream.forward_client_key:
        key = "clients' keys forwarded"
    else:
        key = "no API key"
    fallbacks = len(upstream.fallbacks)
    more = f", {fallbacks} fallback{'s' if fallbacks != 1 else ''}" if fallbacks else ""
    return f"{shown.geturl()} ({key}{more})"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`: localhost, 127.0.0.0/8 or ::1. A wildcard
    ("", 0.0.0.0, ::), a LAN address or any other name is reachable from elsewhere."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _key_count(settings: Settings, stored_keys: int) -> int:
    return len(settings.auth.keys) + len(settings.auth.admin_keys) + stored_keys


def exposed_and_open(settings: Settings, stored_keys: int) -> bool:
    """No API key anywhere (as `Authenticator.open` decides) and a non-loopback bind."""
    return _key_count(settings, stored_keys) == 0 and not is_loopback(settings.server.host)


def check_exposure(settings: Settings, stored_keys: int) -> None:
    """Refuse (one line, exit 2) to serve an open server beyond loopback unless allowed."""
    if not exposed_and_open(settings, stored_keys) or settings.server.allow_open:
        return
    host = settings.server.host or "all interfaces"
    raise CliError(
        f"refusing to listen on {host} with no API keys: anyone who can reach it would be an "
        "admin of every agent. Create a key with `memproxy keys add TENANT` (same --config / "
        "--database-url), or serve it open on purpose with --allow-open "
        "([server] allow_open = true, MEMPROXY_SERVER_ALLOW_OPEN=true)", code=2)


def _auth_label(settings: Settings, stored_keys: int) -> str:
    counts = [(len(settings.auth.keys), "in [auth.keys]"),
              (len(settings.auth.admin_keys), "admin"),
              (stored_keys, "from `memproxy keys add`")]
    total = sum(n for n, _ in counts)
    if total == 0 and exposed_and_open(settings, stored_keys):
        return ("OPEN to anyone who can reach it (no API keys, --allow-open): every caller is "
                "an admin of the tenant 'default'")
    if total == 0:
        return "open (no API keys: every caller is the tenant 'default')"
    detail = ", ".join(f"{n} {what}" for n, what in counts if n)
    return f"{total} API key{'s' if total != 1 else ''} ({detail})"


def base_url(settings: Settings) -> str:
    """The URL people open: a wildcard bind address is shown as 127.0.0.1."""
    host = settings.server.host
    shown = "127.0.0.1" if host in _ALL_INTERFACES else _host(host)
    return f"http://{shown}:{settings.server.port}"


def docs_url() -> str:
    """The package's `Documentation` project URL, else where the docs are in the source."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for entry in metadata.metadata("memproxy").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() in ("documentation", "docs"):
                return url.strip()
    return DOCS_FALLBACK


def banner(settings: Settings, stored_keys: int) -> str:
    """The start-up block of `memproxy serve` (logged once, before uvicorn's own lines)."""
    root = base_url(settings)
    listening = (" (listening on all interfaces)"
                 if settings.server.host in _ALL_INTERFACES else "")
    rows = [
        ("database", database_label(settings.database.url)),
        ("upstream", _upstream_label(settings)),
        ("auth", _auth_label(settings, stored_keys)),
        ("inspector", f"{root}/ui/{listening}"),
        ("docs", f"{docs_url()}; API schema at /openapi.json"),
    ]
    return "\n".join([f"memproxy {__version__}", *(f"  {k:<10} {v}" for k, v in rows)])
