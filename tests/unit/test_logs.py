"""Logging pieces: request ids, redaction, formatters, the dictConfig, the error middleware,
and the test run's own secret detector (tests/secrets.py) — which must itself be able to fail."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.middleware import RequestContextMiddleware
from proxy.config import load_settings
from proxy.obs.logs import (
    REDACTED,
    REQUEST_ID,
    JsonFormatter,
    RedactingFilter,
    Redactor,
    TextFormatter,
    install_record_factory,
    sane_request_id,
    secrets_from_settings,
    uvicorn_options,
)
from tests import secrets, servers
from tests.openapi_check import validate_error

ROOT = Path(__file__).resolve().parents[2]


def record(msg: str, *args: object, exc: BaseException | None = None,
           **extra: object) -> logging.LogRecord:
    """A record as `logger.error(msg, *args, exc_info=exc, extra=extra)` would make it."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.getLogger("memproxy.test").makeRecord(
        "memproxy.test", logging.ERROR, __file__, 1, msg, args, exc_info, extra=extra or None)
    return rec


def raised(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


# -- request ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, kept", [
    ("abc-123", True),
    ("req_01HZX:9f/2+=", True),
    ("3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f", True),
    ("a.b_c:d/e+f=g-h", True),
    ("quote\"d", False),
    ("back\\slash", False),
    ("<script>", False),
    ("50%25", False),
    ("a;b", False),
    ("a@b", False),
    ("x" * 128, True),
    ("x" * 129, False),
    ("", False),
    ("has space", False),
    ("tab\there", False),
    ("new\nline", False),
    ("ünïcode", False),
    (None, False),
])
def test_only_sane_client_request_ids_are_kept(value, kept):
    assert sane_request_id(value) == (value if kept else None)


@pytest.mark.parametrize("value", [
    f"rid-{secrets.CLIENT_KEY}", secrets.CLIENT_KEY, f"{secrets.CLIENT_KEY.upper()}-1",
    f"x{secrets.UPSTREAM_KEY}y",
])
def test_a_request_id_holding_a_secret_is_refused(value):
    assert sane_request_id(value, [None, "", secrets.CLIENT_KEY, secrets.UPSTREAM_KEY]) is None
    assert sane_request_id(value) == value  # the charset alone would accept it


def test_a_request_id_without_the_secrets_is_kept():
    assert sane_request_id("rid-42", [secrets.CLIENT_KEY, None]) == "rid-42"


def test_records_made_during_a_request_carry_its_id():
    install_record_factory()
    token = REQUEST_ID.set("rid-42")
    try:
        inside = record("inside")
    finally:
        REQUEST_ID.reset(token)
    assert inside.request_id == "rid-42"
    assert record("outside").request_id is None


# -- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {secrets.TENANT_A_KEY}",
    f"headers={{'authorization': 'Bearer {secrets.CLIENT_KEY}'}}",
    f"upstream said: Incorrect API key provided: {secrets.UPSTREAM_KEY}",
    f'{{"api_key": "{secrets.ADMIN_KEY}"}}',
    "key mp-" + "A" * 43 + " was used",  # the shape `memproxy keys add` prints
    "basic auth: Basic dXNlcjpwYXNzd29yZA==",
])
def test_key_shaped_text_is_masked(text):
    masked = Redactor().redact(text)
    assert REDACTED in masked
    for secret in (*secrets.ALL, "mp-" + "A" * 43, "dXNlcjpwYXNzd29yZA=="):
        assert secret not in masked


def test_configured_keys_are_masked_whatever_their_shape():
    plain = "tenant-password-without-prefix"
    masked = Redactor([plain, "abc"]).redact(f"key {plain} and abc and the cabbage")
    assert plain not in masked and masked.count(REDACTED) == 1
    assert "abc" in masked  # too short to mask literally: it would eat ordinary words


def test_ordinary_text_is_untouched():
    text = "GET /v1/agents/alice/context 200 in 3 ms; the skeleton key; sk-1; risk-assessment"
    assert Redactor(["not-in-text"]).redact(text) == text


def test_secrets_from_settings_lists_every_clear_key():
    settings = load_settings(environ={}, overrides={
        "upstream": {"api_key": secrets.UPSTREAM_KEY, "fallbacks": [
            {"base_url": "http://fallback/v1", "api_key": secrets.FAKE_UPSTREAM_KEY}]},
        "auth": {"keys": {secrets.TENANT_A_KEY: "a", "sha256:" + "0" * 64: "b"},
                 "admin_keys": [secrets.ADMIN_KEY]},
        "database": {"url": f"postgresql://u:{secrets.DATABASE_PASSWORD}@db:5432/m"},
    })
    assert secrets_from_settings(settings) == sorted([
        secrets.UPSTREAM_KEY, secrets.FAKE_UPSTREAM_KEY, secrets.TENANT_A_KEY, secrets.ADMIN_KEY,
        secrets.DATABASE_PASSWORD])


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_the_filter_masks_message_arguments_exceptions_and_fields(formatter):
    rec = record(
        "calling upstream with %s", secrets.UPSTREAM_KEY,
        exc=raised(f"rejected Bearer {secrets.CLIENT_KEY}"),
        fields={"header": f"Bearer {secrets.TENANT_B_KEY}", "status": 401},
    )
    assert RedactingFilter([secrets.UPSTREAM_KEY]).filter(rec) is True  # never dropped
    out = formatter.format(rec)
    assert secrets.find_secrets(out) == []
    assert out.count(REDACTED) >= 3 and "RuntimeError" in out and "401" in out


# -- formatters -----------------------------------------------------------------------------


def test_json_lines_carry_the_fixed_keys_and_the_fields():
    install_record_factory()
    token = REQUEST_ID.set("rid-7")
    try:
        rec = record("request", fields={"method": "POST", "status": 200, "mode": "stateful"})
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "ERROR", "logger": "memproxy.test", "message": "request",
        "request_id": "rid-7"}
    assert entry["ts"].endswith("+00:00")
    assert (entry["method"], entry["status"], entry["mode"]) == ("POST", 200, "stateful")


def test_json_lines_hold_the_exception_on_one_line():
    entry = json.loads(JsonFormatter().format(record("failed", exc=raised("boom"))))
    assert "RuntimeError: boom" in entry["exc"]


def test_text_lines_show_the_request_id_and_fields():
    rec = record("request", fields={"path": "/v1/models", "agent": "a b"})
    rec.request_id = "rid-9"
    text = TextFormatter().format(rec)
    assert "ERROR memproxy.test [rid-9]: request path=/v1/models agent=\"a b\"" in text


# -- configuration (in a fresh process: dictConfig replaces this process's handlers) ---------

_CHILD = """
import logging, os
from proxy.config import load_settings
from proxy.obs.logs import configure_logging
settings = load_settings(environ={}, overrides={
    "logging": {"format": os.environ["FORMAT"], "level": "INFO"},
    "upstream": {"api_key": os.environ["UP_KEY"]},
})
configure_logging(settings)
logging.getLogger("memproxy.chat").info("sending with %s", os.environ["UP_KEY"])
logging.getLogger("memproxy.chat").warning("header Authorization: Bearer %s", os.environ["CL_KEY"])
logging.getLogger("uvicorn.access").info("uvicorn's own access line")
logging.getLogger("httpx").info("HTTP Request: POST http://upstream/v1/chat/completions")
logging.getLogger("uvicorn.error").info("Started server process")
"""


def _child_stderr(fmt: str) -> list[str]:
    env = {**os.environ, "FORMAT": fmt, "UP_KEY": secrets.UPSTREAM_KEY,
           "CL_KEY": secrets.CLIENT_KEY, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    return out.stderr.splitlines()


def test_configure_logging_json():
    lines = _child_stderr("json")
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("memproxy.chat", "INFO"), ("memproxy.chat", "WARNING"), ("uvicorn.error", "INFO")]
    assert secrets.find_secrets("\n".join(lines)) == []
    assert all(REDACTED in e["message"] for e in entries[:2])


def test_configure_logging_text():
    lines = _child_stderr("text")
    assert len(lines) == 3 and all(" memproxy.chat: " in x for x in lines[:2])
    assert secrets.find_secrets("\n".join(lines)) == []


def test_uvicorn_options_carry_the_shutdown_timeout_and_logging():
    settings = load_settings(environ={}, overrides={
        "server": {"shutdown_timeout_s": 7.5}, "logging": {"level": "WARNING"}})
    options = uvicorn_options(settings)
    assert options["timeout_graceful_shutdown"] == 7.5
    assert options["log_level"] == "warning" and options["access_log"] is False
    assert options["log_config"]["root"]["level"] == "WARNING"


# -- the middleware's last resort -----------------------------------------------------------


def test_an_exception_escaping_a_handler_is_an_openai_500_with_the_request_id(caplog):
    async def broken(request: Request) -> Response:
        raise RuntimeError("handler bug")

    app = Starlette(routes=[Route("/broken", broken)],
                    middleware=[Middleware(RequestContextMiddleware)])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/broken", headers={"x-request-id": "rid-500"})

    with caplog.at_level(logging.INFO):
        response = asyncio.run(call())
    assert response.status_code == 500
    validate_error(response.json())
    assert response.json()["error"]["code"] == "internal_error"
    assert "handler bug" not in response.text
    assert response.headers["x-request-id"] == "rid-500"
    failure = [r for r in caplog.records if r.exc_info and r.name == "memproxy"]
    assert len(failure) == 1 and failure[0].request_id == "rid-500"
    access = [r for r in caplog.records if r.name == "memproxy.access"]
    assert len(access) == 1 and access[0].fields["status"] == 500


# -- the run-log check of tests/secrets.py --------------------------------------------------


@pytest.fixture
def private_run_log() -> Iterator[tuple[secrets.RunLog, logging.Logger]]:
    """A RunLog fed by a logger that does not propagate, so the planted secrets stay out of
    the session's real run log."""
    with tempfile.TemporaryDirectory() as tmp:
        handler = secrets.RunLog(Path(tmp) / "run.log")
        logger = logging.getLogger("tests.planted-secrets")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            yield handler, logger
        finally:
            logger.removeHandler(handler)
            handler.finish()


def test_the_detector_catches_a_secret_in_a_message_argument(private_run_log):
    handler, logger = private_run_log
    logger.info("nothing to see")
    assert handler.leaks() == []
    logger.debug("upstream key is %s", secrets.UPSTREAM_KEY)
    assert handler.leaks() == [secrets.UPSTREAM_KEY]


def test_the_detector_catches_secrets_in_fields_and_exceptions(private_run_log):
    handler, logger = private_run_log
    logger.warning("request", extra={"fields": {"input": secrets.MESSAGE_SECRET}})
    try:
        raise ValueError(f"bad key {secrets.TENANT_B_KEY}")
    except ValueError:
        logger.exception("failed")
    assert set(handler.leaks()) >= {secrets.MESSAGE_SECRET, secrets.TENANT_B_KEY}


def test_the_detector_survives_logging_reconfiguration(private_run_log):
    handler, logger = private_run_log
    handler.close()  # what uvicorn's dictConfig does to every handler
    logger.error("after reconfiguration: %s", secrets.ADMIN_KEY)
    assert handler.leaks() == [secrets.ADMIN_KEY]


def test_subprocess_output_reaches_the_run_log(private_run_log, monkeypatch):
    handler, _ = private_run_log
    monkeypatch.setattr(servers, "OUTPUT_SINK", handler.append)
    fd, name = tempfile.mkstemp(suffix=".log")
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; print(sys.argv[1])",
                                 secrets.WRONG_KEY], stdout=out, stderr=subprocess.STDOUT)
    proc.wait(30)
    servers.ProcessHandle(proc, 0, Path(name), "127.0.0.1").stop()
    assert handler.leaks() == [secrets.WRONG_KEY]
    assert not Path(name).exists()
