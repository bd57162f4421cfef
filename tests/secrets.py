"""Every API key and secret the tests use, and the check that none of them reaches a log.

Tests take their keys from here (never literals of their own) so that one list says what must
never be logged. The strings are clearly fake and distinctive: finding one in a log is never a
coincidence.

- `RunLog` is a logging handler that appends every record (message, arguments, `extra`
  fields, exception text) to a file; tests/conftest.py puts one on the root logger at DEBUG
  for the whole session, and subprocess output (tests/servers.py) is appended to the same file.
- `find_secrets(text)` names the secrets found in a text; at the end of the session the run
  fails if the run log holds any.

(The module is `tests.secrets`; the standard library's `secrets` is unaffected because tests
import it as part of the `tests` package.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

# Keys clients send to memproxy.
CLIENT_KEY = "sk-test-client-FAKE-7f3a9c21e4b8"  # the default of ProxyServer.client()
TENANT_A_KEY = "sk-test-tenant-a-FAKE-2b91e07d5c"
TENANT_B_KEY = "sk-test-tenant-b-FAKE-9d44a6f1e3"
ADMIN_KEY = "sk-test-admin-FAKE-51c8e2b7a0d9"
WRONG_KEY = "sk-test-wrong-FAKE-0e6d3b8f2c17"  # a key nobody configured
USER_OWN_KEY = "sk-test-users-own-FAKE-c3f05a9e"  # a user's provider key (forward_client_key)

# Keys memproxy sends upstream, and keys the fake upstream insists on.
UPSTREAM_KEY = "sk-test-upstream-FAKE-a8e1d4c7b2"
FAKE_UPSTREAM_KEY = "sk-test-fake-upstream-FAKE-4d7b"
SECRET_FROM_ENV = "sk-test-from-env-FAKE-6a2c9e0f"  # secrets given as env:VAR or variables
DATABASE_PASSWORD = "pg-test-password-FAKE-5b3e8d1a"  # in a Postgres URL's user info

# A phrase users type into chats: message text is never logged unless include_content is on.
MESSAGE_SECRET = "my vault passphrase is FAKE-SECRET-PHRASE-8c1f5d2a"

# What a model or a user stores in memory (blocks, archival passages): never logged either.
MEMORY_SECRET = "the safe behind the painting opens with FAKE-MEMORY-TEXT-3e7b0c94"

ALL: tuple[str, ...] = (
    CLIENT_KEY,
    TENANT_A_KEY,
    TENANT_B_KEY,
    ADMIN_KEY,
    WRONG_KEY,
    USER_OWN_KEY,
    UPSTREAM_KEY,
    FAKE_UPSTREAM_KEY,
    SECRET_FROM_ENV,
    DATABASE_PASSWORD,
    MESSAGE_SECRET,
    "FAKE-SECRET-PHRASE-8c1f5d2a",  # the distinctive part alone, however the text is cut
    MEMORY_SECRET,
    "FAKE-MEMORY-TEXT-3e7b0c94",
)

# The LogRecord attributes logging sets itself; anything else came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
}


def find_secrets(text: str, secrets: Iterable[str] = ALL) -> list[str]:
    """The secrets that occur in `text`, in the order of `secrets`."""
    return [s for s in secrets if s in text]


def render(record: logging.LogRecord) -> str:
    """Everything a handler could write for `record`: message with arguments, `extra`
    fields, exception and stack text. (Not a pretty format: a complete one.)"""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not hide its arguments
        message = f"{record.msg!r} {record.args!r}"
    parts = [f"{record.levelname} {record.name}: {message}"]
    parts += [f"{k}={v!r}" for k, v in record.__dict__.items() if k not in _STANDARD]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return " ".join(parts)


class RunLog(logging.Handler):
    """Appends every record, and any text given to `append`, to one file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", errors="replace")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = render(record)
        except Exception:  # never break the code under test because of the capture
            line = f"<unrenderable record from {record.name}>"
        self.append(line + "\n")

    def append(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(text)

    def leaks(self) -> list[str]:
        """The secrets found in the run log so far."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return find_secrets(self.path.read_text(encoding="utf-8", errors="replace"))

    def close(self) -> None:
        """Keep writing: uvicorn's `dictConfig` closes every handler each time a server is
        configured, yet this one must see the whole run. `finish()` really closes."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def finish(self) -> None:
        with self._lock:
            self._file.close()
        super().close()
