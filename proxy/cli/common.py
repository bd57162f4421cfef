"""What every command shares: settings from flags, the connection options, expected errors.

An expected failure (the API said no, a file is missing, bad input) is a `CliError`: `main`
prints its one-line message to stderr and exits with its code, never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from ..config import Settings, load_settings

CONFIG_ENV = "MEMPROXY_CONFIG"
URL_ENV = "MEMPROXY_URL"
KEY_ENV = "MEMPROXY_API_KEY"
# The variables the CLI reads itself (MEMPROXY_MODEL, MEMPROXY_CHAT_HISTORY: `chat`'s model and
# history file), besides the settings'.
CLI_VARIABLES = (CONFIG_ENV, URL_ENV, KEY_ENV, "MEMPROXY_MODEL", "MEMPROXY_CHAT_HISTORY")


class CliParser(argparse.ArgumentParser):
    """argparse's parser, except that a missing COMMAND (`memproxy`, `memproxy memory`) shows
    the commands to choose from, not only a usage line that names none of them."""

    def error(self, message: str) -> NoReturn:
        if "required: COMMAND" in message:
            self.print_help(sys.stderr)
            self.exit(2, f"\n{self.prog}: error: {message}\n")
        super().error(message)


def confirm(question: str) -> bool:
    """Ask `question [y/N]` at the terminal; only y or yes is yes. The question goes to stderr
    (stdout may be redirected to a file) and the end of input (Ctrl-D) answers no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        print(file=sys.stderr)
        return False
    return line.strip().lower() in ("y", "yes")


class CliError(Exception):
    """An expected failure: `message` goes to stderr as one line, `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from `--config` (or $MEMPROXY_CONFIG), the environment and the given flags."""
    overrides: dict[str, dict[str, object]] = {"server": {}, "database": {}, "upstream": {}}
    if getattr(args, "host", None):
        overrides["server"]["host"] = args.host
    if getattr(args, "port", None):
        overrides["server"]["port"] = args.port
    if getattr(args, "workers", None):
        overrides["server"]["workers"] = args.workers
    if getattr(args, "allow_open", False):
        overrides["server"]["allow_open"] = True
    if getattr(args, "database_url", None):
        overrides["database"]["url"] = args.database_url
    if getattr(args, "upstream_url", None):
        overrides["upstream"]["base_url"] = args.upstream_url
    config = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    return load_settings(config, overrides=overrides)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """`--config` and `--database-url`, exactly as `serve` takes them."""
    parser.add_argument("--config", help="TOML configuration file (see config.example.toml)")
    parser.add_argument("--database-url", help="sqlite:///path.db or postgresql://...")


def connection_parent() -> argparse.ArgumentParser:
    """Options of every command that talks to the agents API (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "connection",
        "Without --url the command opens the configured database itself (as an admin); "
        "with --url it calls a running memproxy.",
    )
    group.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"a running memproxy, e.g. http://127.0.0.1:8080 (default ${URL_ENV})",
    )
    group.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV),
        help=f"API key for --url (default ${KEY_ENV})",
    )
    group.add_argument(
        "--tenant",
        help="the tenant the agent belongs to (admin keys and local mode; default 'default')",
    )
    group.add_argument("--config", help="TOML configuration file (local mode)")
    group.add_argument("--database-url", help="sqlite:///path.db or postgresql://... (local mode)")
    return parent


def json_parent() -> argparse.ArgumentParser:
    """`--json`, for read commands."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parent


def print_json(value: Any) -> None:
    """Pretty JSON on stdout, non-ASCII kept readable."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def parse_tags(raw: str | None) -> list[str]:
    """`a,b, c` → `["a", "b", "c"]`; empty items dropped."""
    if not raw:
        return []
    return [t.strip() for t in raw.split(",") if t.strip()]


def _int_at_least(raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(raw: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _int_at_least(raw, 1)


def non_negative_int(raw: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _int_at_least(raw, 0)
