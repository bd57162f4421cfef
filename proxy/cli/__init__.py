"""The `memproxy` command: one module per command group, argparse, no extra dependency.

`serve`, `keys` and `migrate` work on the configuration and database directly; every other
command goes through the agents REST API (`client.connect`), either of a running server
(`--url`) or of the app run in-process on the configured database. Expected failures print one
line to stderr and exit non-zero (1; 2 for usage and configuration errors), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .. import __version__
from ..config import ConfigError, load_settings, unknown_variables
from . import (
    ab,
    agents,
    chat,
    forget,
    keys,
    load,
    memory,
    messages,
    migrate,
    passages,
    serve,
    transfer,
)
from .client import connect
from .common import (
    CLI_VARIABLES,
    CONFIG_ENV,
    CliError,
    CliParser,
    connection_parent,
    json_parent,
)

__all__ = ["CONFIG_ENV", "app_from_environment", "build_parser", "main"]


def app_from_environment():
    """Uvicorn factory for `--workers N`: each worker rebuilds settings from the environment."""
    from ..app import create_app

    return create_app(load_settings(os.environ.get(CONFIG_ENV)))


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="memproxy",
        description="An OpenAI-compatible stateful proxy with long-term memory. "
        "Run `memproxy COMMAND --help` for a command's options.",
        epilog="Data commands (agents, memory, messages, passages, forget, purge, forget-log, "
        "export, "
        "import, load, chat, ab) open "
        "the configured database themselves, or call a running server with --url URL "
        "(or $MEMPROXY_URL) and --key KEY (or $MEMPROXY_API_KEY).",
    )
    parser.add_argument("--version", action="version", version=f"memproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = connection_parent()
    json_out = json_parent()
    serve.register(sub)
    keys.register(sub)
    migrate.register(sub)
    agents.register(sub, connection, json_out)
    memory.register(sub, connection, json_out)
    messages.register(sub, connection, json_out)
    passages.register(sub, connection, json_out)
    forget.register(sub, connection, json_out)
    transfer.register(sub, connection)
    load.register(sub, connection)
    chat.register(sub, connection)
    ab.register(sub, connection)
    return parser


async def _run_api(args: argparse.Namespace) -> int:
    async with connect(args, upstream=getattr(args, "api_upstream", False),
                       streaming=getattr(args, "api_streaming", False)) as api:
        return int(await args.api_func(api, args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":  # serve logs them (in the log's format)
        for warning in unknown_variables(dict(os.environ), CLI_VARIABLES):
            print(f"memproxy: warning: {warning}", file=sys.stderr)
    try:
        if hasattr(args, "api_func"):
            return asyncio.run(_run_api(args))
        return int(args.func(args))
    except ConfigError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"memproxy: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `memproxy messages a | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
