"""`memproxy keys add / ls / rm`: API keys stored hashed in the database (docs/security.md).

These work on the configured database directly, not through the API, because they are how an
operator gets the first key. A key is printed once, by `add`; afterwards it is named by its
fingerprint, the first 12 hex digits of its SHA-256, which `ls` shows and `rm` takes: enough to
tell keys apart, useless for guessing the key. Running servers pick up added and removed keys
by themselves (api/auth.py, `[auth] key_recheck_seconds`).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..config import ConfigError
from .common import CliError, add_database_options, json_parent, print_json, settings_from_args
from .startup import database_error, require_database
from .table import format_table, format_time

FINGERPRINT_LENGTH = 12
ADMIN_TENANT = "*"  # what `ls` shows for an admin key; an admin acts for every tenant
T = TypeVar("T")


def fingerprint(key_hash: str) -> str:
    return key_hash[:FINGERPRINT_LENGTH]


def _with_store(args: argparse.Namespace, body: Callable[[Any], Awaitable[T]], *,
                create: bool = False) -> T:
    from ..store import open_store

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc), code=2) from exc
    if not create:
        require_database(args, settings)

    async def run() -> T:
        store = open_store(settings.database.url)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except CliError:
        raise
    except Exception as exc:  # the database's failure (URL, server, driver): one line
        raise CliError(database_error(settings.database.url, exc), code=2) from exc


def cmd_keys_add(args: argparse.Namespace) -> int:
    from ..api.auth import OPEN_TENANT, hash_key

    if args.admin == (args.tenant is not None):
        raise CliError("give a TENANT, or --admin for an admin key (not both)", code=2)
    args.tenant = args.tenant or ADMIN_TENANT

    key = "mp-" + secrets.token_urlsafe(32)
    digest = hash_key(key)

    async def add(store: Any) -> int:
        """Store the key; return how many agents of tenant 'default' no key owns now."""
        await store.add_api_key(digest, args.tenant, admin=args.admin)
        if any(k.tenant == OPEN_TENANT for k in await store.list_api_keys()):
            return 0
        return len(await store.list_agents_page(OPEN_TENANT, limit=1000))

    # `add` may create the database: it is how a new deployment gets its first key.
    orphans = _with_store(args, add, create=True)
    print(key)
    what = "an admin key" if args.admin else f"a new key for tenant {args.tenant!r}"
    print(f"stored {what} (fingerprint {fingerprint(digest)}); it is shown only once",
          file=sys.stderr)
    if orphans and not args.admin:
        more = "+" if orphans >= 1000 else ""
        print(f"note: {orphans}{more} agent(s) belong to tenant {OPEN_TENANT!r} (where an open "
              f"server puts every agent) and no stored key is for {OPEN_TENANT!r}: only admin "
              f"keys see them now. To keep using them, run `memproxy keys add {OPEN_TENANT}` "
              "and use that key "
              "(docs/security.md, \"Adopting an open server's agents\")", file=sys.stderr)
    return 0


def cmd_keys_ls(args: argparse.Namespace) -> int:
    async def listing(store: Any) -> list[Any]:
        return await store.list_api_keys()

    keys = _with_store(args, listing)
    if args.json:
        print_json([{"fingerprint": fingerprint(k.key_hash), "tenant": k.tenant,
                     "admin": k.admin, "created_at": k.created_at} for k in keys])
        return 0
    rows = [(fingerprint(k.key_hash), k.tenant, "yes" if k.admin else "",
             format_time(k.created_at)) for k in keys]
    print(format_table(("FINGERPRINT", "TENANT", "ADMIN", "CREATED"), rows,
                       empty="(no keys stored; keys in the configuration file are not listed)"))
    return 0


def cmd_keys_rm(args: argparse.Namespace) -> int:
    if (args.fingerprint is None) == (args.tenant is None):
        raise CliError("give a FINGERPRINT (from `memproxy keys ls`) or --tenant TENANT", code=2)

    async def remove(store: Any) -> list[Any]:
        keys = await store.list_api_keys()
        if args.tenant is not None:
            chosen = [k for k in keys if k.tenant == args.tenant]
            if not chosen:
                raise CliError(f"no stored key for tenant {args.tenant!r}")
        else:
            wanted = args.fingerprint.lower()
            chosen = [k for k in keys if k.key_hash.startswith(wanted)]
            if not chosen:
                raise CliError(f"no stored key with fingerprint {args.fingerprint!r}")
            if len(chosen) > 1:
                raise CliError(f"fingerprint {args.fingerprint!r} matches {len(chosen)} keys; "
                               "give more of it")
        for k in chosen:
            await store.remove_api_key(k.key_hash)
        return chosen

    removed = _with_store(args, remove)
    for k in removed:
        print(f"removed key {fingerprint(k.key_hash)} (tenant {k.tenant!r})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser(
        "keys", help="manage API keys (add / ls / rm)",
        description="Manage the API keys stored (hashed) in the database. Running servers "
        "pick up changes by themselves; no restart.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    add = keys_sub.add_parser(
        "add", help="create a key for TENANT and print it",
        description="Create an API key for TENANT, store its hash in the database and print "
        "the key (shown only once).",
    )
    add_database_options(add)
    add.add_argument("tenant", nargs="?", help="the tenant the key acts for (not with --admin)")
    add.add_argument("--admin", action="store_true",
                     help="an admin key: sees and manages every tenant's agents, as "
                     "[auth] admin_keys do")
    add.set_defaults(func=cmd_keys_add)

    ls = keys_sub.add_parser(
        "ls", parents=[json_parent()], help="list stored keys (fingerprints, never keys)",
        description="List the stored keys: fingerprint (the first 12 hex digits of the key's "
        "SHA-256), tenant, admin flag, creation time. The keys themselves are not stored.")
    add_database_options(ls)
    ls.set_defaults(func=cmd_keys_ls)

    rm = keys_sub.add_parser(
        "rm", help="remove a key by fingerprint, or every key of a tenant",
        description="Remove a stored key by its fingerprint (or a unique prefix of it), or "
        "every key of --tenant. Running servers refuse it within seconds.")
    add_database_options(rm)
    rm.add_argument("fingerprint", nargs="?", metavar="FINGERPRINT")
    rm.add_argument("--tenant", help="remove every stored key of this tenant")
    rm.set_defaults(func=cmd_keys_rm)
