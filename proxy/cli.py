"""The `memproxy` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys

from . import __version__
from .config import ConfigError, Settings, load_settings

CONFIG_ENV = "MEMPROXY_CONFIG"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, object]] = {
        "server": {},
        "database": {},
        "upstream": {},
    }
    if getattr(args, "host", None):
        overrides["server"]["host"] = args.host
    if getattr(args, "port", None):
        overrides["server"]["port"] = args.port
    if getattr(args, "workers", None):
        overrides["server"]["workers"] = args.workers
    if getattr(args, "database_url", None):
        overrides["database"]["url"] = args.database_url
    if getattr(args, "upstream_url", None):
        overrides["upstream"]["base_url"] = args.upstream_url
    return load_settings(args.config or os.environ.get(CONFIG_ENV), overrides=overrides)


def app_from_environment():
    """Uvicorn factory for `--workers N`: each worker rebuilds settings from the environment."""
    from .app import create_app

    return create_app(load_settings(os.environ.get(CONFIG_ENV)))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    logging.basicConfig(
        level=settings.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loop = "auto"
    http = "auto"
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
            log_level=settings.logging.level.lower(),
        )
        return 0
    from .app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop=loop,
        http=http,
        log_level=settings.logging.level.lower(),
    )
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    from .api.auth import hash_key
    from .store import open_store

    settings = _settings(args)
    key = "mp-" + secrets.token_urlsafe(32)

    async def run() -> None:
        store = open_store(settings.database.url)
        await store.open()
        try:
            await store.add_api_key(hash_key(key), args.tenant)
        finally:
            await store.close()

    asyncio.run(run())
    print(key)
    print(f"stored a new key for tenant {args.tenant!r}; it is shown only once", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memproxy",
        description="An OpenAI-compatible stateful proxy with long-term memory.",
    )
    parser.add_argument("--version", action="version", version=f"memproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML configuration file (see config.example.toml)")
        p.add_argument("--database-url", help="sqlite:///path.db or postgresql://...")

    serve = sub.add_parser("serve", help="run the proxy server")
    common(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. .../v1")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_sub.add_parser("add", help="create a key for TENANT and print it")
    common(add)
    add.add_argument("tenant")
    add.set_defaults(func=cmd_keys_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        return 2
