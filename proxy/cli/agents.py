"""`memproxy agents ls|show|create|rm`: the agents of a memproxy, their memory at a glance."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .client import Api
from .common import CliError, confirm, print_json
from .table import format_count, format_table, format_time


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of `text` behind `prefix`; an empty text shows as `(empty)`."""
    if not text:
        return prefix + "(empty)"
    return "\n".join(prefix + line for line in text.splitlines())


def block_heading(block: dict[str, Any]) -> str:
    """`human  9/5000 chars  read-only`."""
    chars = block.get("chars", len(block.get("value") or ""))
    flags = "  read-only" if block.get("read_only") else ""
    limit = format_count(block.get("limit"))
    return f"{block['label']}  {format_count(chars)}/{limit} chars{flags}"


async def cmd_ls(api: Api, args: argparse.Namespace) -> int:
    agents = [a async for a in api.paged("/v1/agents")]
    if args.tenant:
        agents = [a for a in agents if a.get("tenant") == args.tenant]
    if args.json:
        print_json(agents)
        return 0
    rows = []
    for agent in agents:
        stats = agent.get("stats") or {}
        rows.append([
            agent.get("tenant", ""), agent["id"], stats.get("conversations"),
            stats.get("messages"), stats.get("passages"), format_time(agent.get("created_at")),
        ])
    print(format_table(
        ["TENANT", "ID", "CONVERSATIONS", "MESSAGES", "PASSAGES", "CREATED"], rows,
        empty="(no agents)",
    ))
    return 0


async def cmd_show(api: Api, args: argparse.Namespace) -> int:
    agent = await api.get(api.agent_path(args.agent))
    conversations = await api.get(api.agent_path(args.agent, "conversations"))
    if args.json:
        print_json({**agent, "conversations": conversations.get("data", [])})
        return 0
    stats = agent.get("stats") or {}
    print(f"agent {agent['id']}  (tenant {agent.get('tenant', '?')}, "
          f"created {format_time(agent.get('created_at'))})")
    print(f"stats: {format_count(stats.get('conversations', 0))} conversations, "
          f"{format_count(stats.get('messages', 0))} messages, "
          f"{format_count(stats.get('passages', 0))} passages")
    if agent.get("settings"):
        print(f"settings: {agent['settings']}")
    print("\nblocks:")
    for block in agent.get("blocks") or []:
        print("  " + block_heading(block))
        print(indent(block.get("value") or ""))
    rows = [
        [c["id"], c.get("messages"), format_time(c.get("last_message_at")),
         c.get("summary") or ""]
        for c in conversations.get("data", [])
    ]
    print("\nconversations:")
    print(format_table(["ID", "MESSAGES", "LAST MESSAGE", "SUMMARY"], rows, max_width=50))
    return 0


async def cmd_create(api: Api, args: argparse.Namespace) -> int:
    agent = await api.post("/v1/agents", {"id": args.agent})
    print(f"created agent {agent['id']} (tenant {agent.get('tenant', '?')})")
    return 0


async def cmd_rm(api: Api, args: argparse.Namespace) -> int:
    agent = await api.get(api.agent_path(args.agent))  # not found → the API's message
    stats = agent.get("stats") or {}
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to delete without confirmation: pass --yes")
        if not confirm(
            f"delete agent {agent['id']} of tenant {agent.get('tenant', '?')} with "
            f"{stats.get('messages', 0)} messages and {stats.get('passages', 0)} passages?"
        ):
            raise CliError("not deleted")
    await api.delete(api.agent_path(args.agent))
    print(f"deleted agent {agent['id']} (tenant {agent.get('tenant', '?')})")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser,
             json_out: argparse.ArgumentParser) -> None:
    agents = sub.add_parser(
        "agents", help="list, show, create and delete agents",
        description="List, show, create and delete agents.",
    )
    agents_sub = agents.add_subparsers(dest="agents_command", required=True, metavar="COMMAND")

    ls = agents_sub.add_parser(
        "ls", parents=[connection, json_out], help="list agents",
        description="List agents (an admin sees every tenant; --tenant keeps one).",
    )
    ls.set_defaults(api_func=cmd_ls)

    show = agents_sub.add_parser(
        "show", parents=[connection, json_out], help="an agent's blocks, stats, conversations",
        description="Show an agent: memory blocks with their size and limit, stats, "
        "conversations.",
    )
    show.add_argument("agent", help="agent id")
    show.set_defaults(api_func=cmd_show)

    create = agents_sub.add_parser(
        "create", parents=[connection], help="create an agent with the default blocks",
        description="Create an agent with the configured default blocks (agents are also "
        "created on their first chat request).",
    )
    create.add_argument("agent", help="agent id")
    create.set_defaults(api_func=cmd_create)

    rm = agents_sub.add_parser(
        "rm", parents=[connection], help="delete an agent and all its memory",
        description="Delete an agent with its blocks, conversations, messages and passages.",
    )
    rm.add_argument("agent", help="agent id")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(api_func=cmd_rm)
