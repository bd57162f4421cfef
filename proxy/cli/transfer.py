"""`memproxy export AGENT` and `memproxy import FILE`: an agent as one JSON document.

The document is the API's (docs/api.md, "The agent document"); the CLI only moves it between
the server and a file, so export → rm → import gives back the same agent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import Api
from .common import CliError


def _summary(document: dict) -> str:
    conversations = document.get("conversations") or []
    messages = sum(len(c.get("messages") or []) for c in conversations)
    return (f"{len(document.get('blocks') or [])} blocks, {len(conversations)} conversations, "
            f"{messages} messages, {len(document.get('passages') or [])} passages")


async def cmd_export(api: Api, args: argparse.Namespace) -> int:
    document = await api.get(api.agent_path(args.agent, "export"))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    tmp = f"{args.output}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.output)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"exported agent {args.agent} to {args.output} ({_summary(document)})",
          file=sys.stderr)
    return 0


def _read(path: str) -> bytes:
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        return stream.read() if stream is not None else sys.stdin.read().encode()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


async def cmd_import(api: Api, args: argparse.Namespace) -> int:
    raw = _read(args.file)
    try:
        json.loads(raw)
    except ValueError as exc:
        source = "stdin" if args.file == "-" else args.file
        empty = " (it is empty)" if not raw.strip() else ""
        raise CliError(f"{source} is not a JSON document{empty}: {exc}") from exc
    agent = await api.request(
        "POST", "/v1/agents/import",
        params={"id": args.id, "replace": "true" if args.replace else None},
        content=raw, headers={"content-type": "application/json"},
    )
    stats = agent.get("stats") or {}
    print(f"imported agent {agent['id']} (tenant {agent.get('tenant', '?')}): "
          f"{stats.get('conversations', 0)} conversations, {stats.get('messages', 0)} messages, "
          f"{stats.get('passages', 0)} passages")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser) -> None:
    export = sub.add_parser(
        "export", parents=[connection], help="write an agent as one JSON document",
        description="Write AGENT (blocks, block history, conversations with every message, "
        "passages) as one JSON document, to stdout or -o FILE.",
    )
    export.add_argument("agent", help="agent id")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(api_func=cmd_export)

    import_ = sub.add_parser(
        "import", parents=[connection], help="create an agent from an exported document",
        description="Create an agent from a document written by export (or a Letta .af "
        "file). FILE may be - for stdin.",
    )
    import_.add_argument("file", help="the document, or - for stdin")
    import_.add_argument("--id", help="import under this agent id instead of the document's")
    import_.add_argument("--replace", action="store_true",
                         help="overwrite an existing agent with the same id")
    import_.set_defaults(api_func=cmd_import)
