"""`memproxy passages AGENT`: list or search an agent's archival memory.

What `load` stored and what the model saved with `archival_memory_insert`, as the REST API lists
them (`GET /v1/agents/{a}/passages`): newest first, or with `--search` ranked as the model's
`archival_memory_search` ranks them, scores shown as a share of the best hit. Without this a
newcomer who had just loaded a handbook had no way to see it from the terminal.
"""

from __future__ import annotations

import argparse

from .client import Api
from .common import parse_tags, positive_int, print_json
from .table import format_table, format_time, relative_scores

DEFAULT_LIMIT = 20


async def cmd_passages(api: Api, args: argparse.Namespace) -> int:
    limit = args.limit or DEFAULT_LIMIT
    tags = parse_tags(args.tags)
    body = await api.get(api.agent_path(args.agent, "passages"), query=args.search,
                         tags=",".join(tags) or None, limit=limit)
    passages = list(body.get("data", []))
    if args.json:
        print_json(passages)
        return 0
    headers = ["ID", "CREATED", "TAGS", "TEXT"]
    rows = [[p.get("id"), format_time(p.get("created_at")), ",".join(p.get("tags") or []),
             p.get("text") or ""] for p in passages]
    if args.search:
        scores = relative_scores([p.get("score") for p in passages])
        headers.insert(1, "SCORE")
        rows = [[row[0], score, *row[1:]] for row, score in zip(rows, scores, strict=True)]
    print(format_table(headers, rows, max_width=80,
                       empty="(no matches)" if args.search else "(no passages)"))
    if body.get("has_more"):
        print(f"(more than {limit}: raise --limit)")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser,
             json_out: argparse.ArgumentParser) -> None:
    passages = sub.add_parser(
        "passages", parents=[connection, json_out], help="list or search archival memory",
        description="List AGENT's archival passages, newest first (what `load` stored and what "
        "the model saved), or --search them best first, as the model's archival_memory_search "
        "ranks them. SCORE is a share of the best hit; --json keeps the raw score. Remove "
        "passages with `forget AGENT --passage ID`.",
    )
    passages.add_argument("agent", help="agent id")
    passages.add_argument("--search", "-s", metavar="QUERY", help="search (best first)")
    passages.add_argument("--tags", help="only passages having all these tags, comma-separated "
                          "(e.g. file:handbook.md)")
    passages.add_argument("--limit", "-n", type=positive_int,
                          help=f"at most N passages (default {DEFAULT_LIMIT})")
    passages.set_defaults(api_func=cmd_passages)
