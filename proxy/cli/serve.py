"""`memproxy serve`
(docs/design.md §3.1: flags and behaviour are a contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ..config import unknown_variables
from .common import CLI_VARIABLES, CONFIG_ENV, add_database_options, settings_from_args
from .startup import banner, check_database, check_exposure, exposed_and_open


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..obs.logs import configure_logging, uvicorn_options

    settings = settings_from_args(args)
    configure_logging(settings)
    log = logging.getLogger("memproxy")
    for warning in unknown_variables(dict(os.environ), CLI_VARIABLES):
        log.warning(warning)
    # before uvicorn: a database that cannot be opened is one line (startup.py), not a traceback
    stored_keys = asyncio.run(check_database(settings))
    check_exposure(settings, stored_keys)  # no key and not loopback: only with --allow-open
    log.info(banner(settings, stored_keys))
    if exposed_and_open(settings, stored_keys):
        log.warning("this server is open to anyone who can reach %s:%s: there is no API key, "
                    "so every caller is an admin (--allow-open); create one with "
                    "`memproxy keys add TENANT`", settings.server.host or "*",
                    settings.server.port)
    from ..api.connections import http_protocol

    loop = "auto"
    http = http_protocol()  # uvicorn's own, plus head/body deadlines (api/connections.py)
    if settings.server.workers > 1:
        # Workers are separate processes: hand them the resolved settings via the environment.
        if args.config:
            os.environ[CONFIG_ENV] = os.path.abspath(args.config)
        os.environ["MEMPROXY_DATABASE_URL"] = settings.database.url
        os.environ["MEMPROXY_UPSTREAM_BASE_URL"] = settings.upstream.base_url
        uvicorn.run(
            "proxy.cli:app_from_environment",
            factory=True,
            host=settings.server.host,
            port=settings.server.port,
            workers=settings.server.workers,
            loop=loop,
            http=http,
            **uvicorn_options(settings),
        )
        return 0
    from ..app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop=loop,
        http=http,
        **uvicorn_options(settings),
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="run the proxy server",
        description="Run the OpenAI-compatible stateful proxy.",
    )
    add_database_options(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. .../v1")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--allow-open", action="store_true",
        help="serve with no API key on a non-loopback host (every caller is an admin); "
        "without it such a start is refused ([server] allow_open)")
    serve.set_defaults(func=cmd_serve)

