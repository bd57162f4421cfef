"""`memproxy forget`: delete a conversation, forget what was said, purge, read the audit log.

Over the agents REST API like the other data commands (docs/forgetting.md). Forgetting cannot
be undone: export the agent first (`memproxy export AGENT > backup.json`) when you may need it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .client import Api, path_id
from .common import CliError, confirm, print_json
from .table import format_table, format_time


def _confirm(args: argparse.Namespace, what: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError("refusing to forget without confirmation: pass --yes")
    if not confirm(f"{what}? This cannot be undone (export first)."):
        raise CliError("nothing forgotten")


def _removed(removed: dict[str, Any]) -> str:
    return ", ".join(f"{removed.get(k, 0)} {k}" for k in
                     ("conversations", "messages", "passages", "responses", "blocks"))


def _message_key(value: str) -> dict[str, Any]:
    conversation, sep, seq = value.rpartition(":")
    if not sep or not seq.isdigit() or not conversation:
        raise argparse.ArgumentTypeError("expected CONVERSATION:SEQ, e.g. default:7")
    return {"conversation_id": conversation, "seq": int(seq)}


async def cmd_forget(api: Api, args: argparse.Namespace) -> int:
    if args.conversation:
        _confirm(args, f"delete conversation {args.conversation} of agent {args.agent}")
        result = await api.delete(api.agent_path(
            args.agent, "conversations", path_id(args.conversation, "conversation id")))
    else:
        body: dict[str, Any] = {"messages": args.message or [], "passages": args.passage or [],
                                "archival": not args.no_archival}
        if args.query is not None:
            body["query"] = args.query
        if not (args.query or args.message or args.passage):
            raise CliError("give --query, --message, --passage or --conversation")
        _confirm(args, f"forget what matches in agent {args.agent}")
        result = await api.post(api.agent_path(args.agent, "forget"), body)
    if args.json:
        print_json(result)
    else:
        print(f"removed {_removed(result['removed'])}")
    return 0


async def cmd_purge(api: Api, args: argparse.Namespace) -> int:
    await api.post("/v1/purge")
    print("purged: forgotten text erased from indexes and logs")
    return 0


async def cmd_log(api: Api, args: argparse.Namespace) -> int:
    page = await api.get("/v1/forget-log", agent_id=args.agent, limit=args.limit)
    if args.json:
        print_json(page["data"])
        return 0
    rows = [[format_time(e["created_at"]), e["agent_id"], e["kind"], e["actor"],
             e["conversations"], e["messages"], e["passages"], e["responses"], e["blocks"]]
            for e in page["data"]]
    print(format_table(["when", "agent", "kind", "by", "conversations", "messages", "passages",
                        "responses", "blocks"], rows))
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser,
             json_out: argparse.ArgumentParser) -> None:
    forget = sub.add_parser(
        "forget", parents=[connection, json_out],
        help="delete a conversation or forget messages and passages",
        description="Forget for good (docs/forgetting.md): --conversation deletes one "
        "conversation and everything of it; --query forgets every message and passage holding "
        "all its words; --message CONV:SEQ and --passage ID name rows. Audited (counts only). "
        "Export the agent first if you may need it again.")
    forget.add_argument("agent", help="agent id")
    forget.add_argument("--conversation", "-c", help="delete this conversation")
    forget.add_argument("--query", "-q", help="forget rows holding all these words")
    forget.add_argument("--message", "-m", action="append", type=_message_key,
                        metavar="CONV:SEQ", help="forget this message (repeatable)")
    forget.add_argument("--passage", "-p", action="append", type=int, metavar="ID",
                        help="forget this archival passage (repeatable)")
    forget.add_argument("--no-archival", action="store_true",
                        help="with --query: leave archival passages alone")
    forget.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(api_func=cmd_forget)

    purge = sub.add_parser(
        "purge", parents=[connection], help="erase forgotten text from indexes and logs (admin)",
        description="Erase physically what forgetting leaves behind (full-text index segments, "
        "the write-ahead log on SQLite; VACUUM on Postgres). Admin key needed; rewrites the "
        "indexes, so run it off-peak.")
    purge.set_defaults(api_func=cmd_purge)

    log = sub.add_parser(
        "forget-log", parents=[connection, json_out], help="the audit log of forgetting",
        description="Deletes, forgets and retention passes, newest first: who, when, how many "
        "(never what).")
    log.add_argument("--agent", help="only this agent")
    log.add_argument("--limit", "-n", type=int, default=100)
    log.set_defaults(api_func=cmd_log)
