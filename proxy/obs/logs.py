"""Logging: text or JSON lines, a request id on every record, and secrets masked.

Why this module exists:
- Operators correlate a client's complaint with the server's log through one id per request
  (`x-request-id`). The id lives in a context variable set by the request middleware
  (`proxy/api/middleware.py`); a log record factory stamps it on every record created while
  that request runs, whichever logger or handler ends up writing it.
- Log collectors want one JSON object per line; people want text. `[logging] format` picks.
- Keys must never reach a log file. The code logs no keys, Authorization headers or message
  text (text only with `[logging] include_content`); `RedactingFilter` on every handler masks
  anything that still looks like a key, as a second line of defence.

`serve` calls `configure_logging(settings)` once and hands `uvicorn_log_config(settings)` to
uvicorn (which applies the same dictConfig in each worker process).
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from ..config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("memproxy_request_id", default=None)
# The access-log fields of the running request (a dict the middleware creates and logs).
REQUEST_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar(
    "memproxy_request_fields", default=None
)

MAX_REQUEST_ID = 128
# Letters, digits and `_.:/+=-`: UUIDs, ULIDs, base64 and `req_…`-style ids pass; quotes,
# backslashes, `<>`, `%`, `;`, `@` and spaces (log and header injection) do not.
REQUEST_ID_CHARS = "A-Za-z0-9_.:/+=-"
_SANE_REQUEST_ID = re.compile(rf"[{REQUEST_ID_CHARS}]{{1,{MAX_REQUEST_ID}}}")
REDACTED = "[REDACTED]"
MIN_LITERAL_SECRET = 4  # shorter configured keys would mask ordinary words

# Record attributes that the logging module sets itself; anything else came from `extra`.
# (uvicorn's `color_message` is its message again, with terminal colours.)
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "request_id", "taskName", "color_message"}

# Things that look like credentials wherever they appear in a message.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=:-]+"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)((?:authorization|api[_-]?key|x-api-key)[\"']?\s*[:=]\s*[\"']?)"
                r"(?!\[REDACTED\])[^\s\"',;}]+"), r"\1" + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), REDACTED),
    (re.compile(r"\bmp-[A-Za-z0-9_-]{16,}"), REDACTED),  # keys made by `memproxy keys add`
)


# -- request ids and per-request fields -----------------------------------------------------


def new_request_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def sane_request_id(value: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """The client's `X-Request-Id` if it is safe to log and echo, else None so that a fresh
    id is generated (and the client's is never logged).

    Safe: 1–128 characters of `REQUEST_ID_CHARS`, and none of `secrets` inside it (compared
    without case). The middleware passes the request's own Authorization token and every key
    of the configuration: an id is written on every log record of its request, so a client
    that puts its key there by mistake (or a gateway that copies one) must not log it."""
    if value is None or not _SANE_REQUEST_ID.fullmatch(value):
        return None
    folded = value.casefold()
    if any(secret and secret.casefold() in folded for secret in secrets):
        return None
    return value


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def annotate(**fields: Any) -> None:
    """Add safe fields (mode, agent, model, steps, ...) to the running request's access-log
    line. A no-op outside a request, so handlers can call it unconditionally."""
    current = REQUEST_FIELDS.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


_factory_installed = False


def install_record_factory() -> None:
    """Make every new LogRecord carry `request_id` (None outside a request). Idempotent."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


# -- third-party loggers that can write content ----------------------------------------------

# Libraries whose DEBUG records can hold what users wrote or what was sent on the wire:
# - aiosqlite logs every call it runs ("executing functools.partial(fn, ...)"), arguments
#   included: the SQLite store's block, revision and passage writes pass the text as arguments;
# - httpcore (and httpcore2, the openai SDK's copy) log each response's headers;
# - hpack/h2 log header values (Authorization among them) when HTTP/2 is used;
# - websockets logs frame data; asyncpg and python-multipart are capped as a precaution.
# They are kept at INFO or above unless `[logging] include_content` is true.
CONTENT_LOGGERS = ("aiosqlite", "asyncpg", "httpcore", "httpcore2", "hpack", "h2",
                   "websockets", "multipart", "python_multipart")


def content_logger_levels(settings: Settings) -> dict[str, str]:
    """The level of each `CONTENT_LOGGERS` logger: inherited (NOTSET) with `include_content`,
    else the stricter of INFO and what memproxy keeps for chatty libraries."""
    if settings.logging.include_content:
        return dict.fromkeys(CONTENT_LOGGERS, "NOTSET")
    level = "INFO" if settings.logging.level.upper() == "DEBUG" else "WARNING"
    return dict.fromkeys(CONTENT_LOGGERS, level)


def cap_content_loggers(settings: Settings) -> None:
    """Apply `content_logger_levels` to this process's loggers. `create_app` calls it, so an
    app embedded in someone else's logging setup (or a test's root logger at DEBUG) gets the
    same guarantee as `memproxy serve`. Logger levels are global: the last app created in a
    process decides."""
    for name, level in content_logger_levels(settings).items():
        logging.getLogger(name).setLevel(level)


# -- redaction ------------------------------------------------------------------------------


class Redactor:
    """Masks credentials in text: known literal secrets plus key-shaped patterns."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literals = sorted({s for s in secrets if s and len(s) >= MIN_LITERAL_SECRET},
                          key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, literals))) if literals else None

    def redact(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        return value


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record with its secrets masked.

    The message is rendered (`msg % args`) and masked, the exception text is rendered and
    masked, and so are `extra` fields; the record is never dropped.
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self.redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what we have, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = r.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.redact(record.exc_text)
            record.exc_info = None  # formatters use exc_text; never re-render unmasked
        if record.stack_info:
            record.stack_info = r.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, r.redact_value(value))
        return True


def _api_keys(value: Any) -> Iterator[str]:
    """Every `api_key` field anywhere in the settings (upstream, fallbacks, embeddings...)."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            field = getattr(value, name)
            if name == "api_key" and isinstance(field, str):
                yield field
            else:
                yield from _api_keys(field)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _api_keys(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _api_keys(item)


def secrets_from_settings(settings: Settings) -> list[str]:
    """Every key the configuration knows in clear: upstream keys (fallbacks and embeddings
    included), tenant keys, admin keys and the database URL's password."""
    found = [*_api_keys(settings), *settings.auth.admin_keys]
    try:
        found.append(urlsplit(settings.database.url).password or "")
    except ValueError:  # an unparsable URL fails at start-up, not here
        pass
    found += [k for k in settings.auth.keys if not k.startswith("sha256:")]
    return sorted({s for s in found if s})


# -- formatters -----------------------------------------------------------------------------


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """`extra` fields of a record; a `fields` dict is flattened into them."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS:
            continue
        if key == "fields" and isinstance(value, Mapping):
            out.update(value)
        else:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message k=v ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        try:
            text = super().format(record)
        finally:
            del record.rid
        extras = _extras(record)
        extras.pop("rid", None)
        if extras:
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
            head, sep, tail = text.partition("\n")
            text = f"{head} {pairs}{sep}{tail}"
        return text


def _text_value(value: Any) -> str:
    """A value for `k=v`: bare when unambiguous, JSON-quoted when it has spaces or quotes."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() or c in "\"=" for c in text):
        return json.dumps(text)
    return text


# -- configuration --------------------------------------------------------------------------


def log_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` for memproxy and uvicorn: one stderr handler with the
    chosen format and the redaction filter; uvicorn's own access log is off because the
    request middleware writes one line per request with its id."""
    level = settings.logging.level.upper()
    quiet = "DEBUG" if level == "DEBUG" else "WARNING"
    formatter = "json" if settings.logging.format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,  # module loggers exist before this runs
        "filters": {
            "redact": {"()": RedactingFilter, "secrets": secrets_from_settings(settings)},
        },
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["redact"],
            },
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            # one line per upstream call would double the access log (kept at DEBUG)
            "httpx": {"level": quiet, "handlers": [], "propagate": True},
            **{name: {"level": lvl, "handlers": [], "propagate": True}
               for name, lvl in content_logger_levels(settings).items()},
        },
    }


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """What to pass as `uvicorn.run(log_config=...)` (the same config as `configure_logging`)."""
    return log_config(settings)


def configure_logging(settings: Settings) -> None:
    """Install memproxy's logging for this process (call once, before uvicorn starts)."""
    install_record_factory()
    logging.config.dictConfig(log_config(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` that belong to logging and shutdown."""
    return {
        "log_config": uvicorn_log_config(settings),
        "log_level": settings.logging.level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": settings.server.shutdown_timeout_s,
    }
