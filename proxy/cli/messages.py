"""`memproxy messages AGENT`: read or search an agent's stored transcripts.

Each message is one line (continuation lines indented under it) with its sequence number, time
and role, and markers for what the client never saw: `[memory]` for an internal memory-tool step,
`[superseded]` for a message replaced by a regenerate or edit, `[evicted]` for a message that left
the context window (it is still searchable).
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from typing import Any

from .client import Api, path_id
from .common import CliError, positive_int, print_json
from .table import format_time, relative_scores

DEFAULT_SEARCH_LIMIT = 20


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (non-text parts named)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'part')}]")
            else:
                parts.append(str(part))
        return " ".join(parts)
    return json.dumps(content, ensure_ascii=False)


def markers(message: dict[str, Any]) -> list[str]:
    marks = []
    if message.get("visible") is False:
        marks.append("[memory]")
    if message.get("superseded"):
        marks.append("[superseded]")
    elif message.get("in_context") is False:
        marks.append("[evicted]")
    return marks


def message_text(message: dict[str, Any]) -> str:
    """Content, then one `→ name(arguments)` line per tool call."""
    lines = []
    text = content_text(message.get("content"))
    if text:
        lines.append(text)
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        lines.append(f"→ {function.get('name', '?')}({function.get('arguments', '')})")
    return "\n".join(lines)


def format_message(message: dict[str, Any], prefix: str = "", score: str | None = None) -> str:
    """`#7    2025-01-02 10:00  assistant  [memory] text`, later lines indented; a search hit
    shows `score` (see `table.relative_scores`)."""
    head = (f"{prefix}#{message.get('seq', '?'):<4} {format_time(message.get('created_at'))}  "
            f"{message.get('role', '?'):<9}  ")
    marks = " ".join(markers(message))
    if score:
        marks = (marks + " " if marks else "") + f"(score {score})"
    body = message_text(message)
    lines = body.splitlines() or [""]
    first = (marks + " " if marks else "") + lines[0]
    pad = " " * len(head)
    return "\n".join([(head + first).rstrip()] + [(pad + line).rstrip() for line in lines[1:]])


async def _conversation(api: Api, agent: str, conversation: str, args: argparse.Namespace
                        ) -> list[dict[str, Any]]:
    path = api.agent_path(agent, "conversations", path_id(conversation, "conversation id"),
                          "messages")
    if args.search:
        body = await api.get(path, query=args.search,
                             limit=args.limit or DEFAULT_SEARCH_LIMIT,
                             include_superseded="true" if args.all else None)
        return list(body.get("data", []))
    tail: deque[dict[str, Any]] = deque(maxlen=args.limit or None)
    async for message in api.paged(path, include_superseded="true" if args.all else None):
        tail.append(message)
    return list(tail)


async def cmd_messages(api: Api, args: argparse.Namespace) -> int:
    if (args.start_date or args.end_date) and (not args.search or args.conversation):
        raise CliError("--start-date/--end-date need --search and no --conversation (they"
                       " filter the search across all conversations)", code=2)
    if args.search and not args.conversation:
        body = await api.get(api.agent_path(args.agent, "messages"), query=args.search,
                             limit=args.limit or DEFAULT_SEARCH_LIMIT,
                             start_date=args.start_date, end_date=args.end_date)
        hits = list(body.get("data", []))
        if args.json:
            print_json(hits)
        else:
            scores = relative_scores([hit.get("score") for hit in hits])
            for hit, score in zip(hits, scores, strict=True):
                print(format_message(hit, prefix=f"{hit.get('conversation_id', '?')} ",
                                     score=score))
            if not hits:
                print("(no matches)")
        return 0
    if args.conversation:
        conversations = [{"id": args.conversation}]
    else:
        listed = await api.get(api.agent_path(args.agent, "conversations"))
        # Oldest activity first, so the newest conversation ends up next to the prompt.
        conversations = list(reversed(listed.get("data", [])))
    result: list[dict[str, Any]] = []
    for conversation in conversations:
        messages = await _conversation(api, args.agent, conversation["id"], args)
        result.append({"conversation": conversation["id"], "messages": messages})
    if args.json:
        print_json(result if not args.conversation else result[0]["messages"])
        return 0
    for i, entry in enumerate(result):
        if not args.conversation:
            if i:
                print()
            print(f"── conversation {entry['conversation']}")
        scores = relative_scores([m.get("score") for m in entry["messages"]])
        for message, score in zip(entry["messages"], scores, strict=True):
            print(format_message(message, score=score))
        if not entry["messages"]:
            print("(no messages)" if not args.search else "(no matches)")
    if not result:
        print("(no conversations)")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser,
             json_out: argparse.ArgumentParser) -> None:
    messages = sub.add_parser(
        "messages", parents=[connection, json_out], help="read or search stored messages",
        description="Print an agent's stored messages, oldest first, one conversation after "
        "another (or only --conversation). [memory] marks internal memory-tool steps, "
        "[superseded] replaced messages (shown with --all), [evicted] messages that left the "
        "context window. --search searches instead, best first (across conversations: ranked "
        "as the model's conversation_search; in one: full-text).",
    )
    messages.add_argument("agent", help="agent id")
    messages.add_argument("--conversation", "-c", help="only this conversation")
    messages.add_argument("--search", "-s", metavar="QUERY", help="search (best first)")
    messages.add_argument("--start-date", metavar="DATE",
                          help="with --search: only messages written at or after DATE "
                          "(YYYY-MM-DD, an ISO date-time, YYYY-MM, YYYY or epoch seconds)")
    messages.add_argument("--end-date", metavar="DATE",
                          help="with --search: only messages written at or before DATE "
                          "(a day, month or year is included whole)")
    messages.add_argument("--all", action="store_true",
                          help="include superseded messages")
    messages.add_argument("--limit", "-n", type=positive_int,
                          help="the last N messages of each conversation (with --search: at "
                          f"most N hits, default {DEFAULT_SEARCH_LIMIT})")
    messages.set_defaults(api_func=cmd_messages)
