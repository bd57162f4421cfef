"""`memproxy memory show|set|edit|history|undo`: read and steer an agent's core memory blocks."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Any

from .agents import block_heading, indent
from .client import Api, path_id
from .common import CliError, positive_int, print_json
from .table import format_table, format_time, one_line


def block_path(api: Api, agent: str, label: str, *rest: str) -> str:
    return api.agent_path(agent, "blocks", path_id(label, "block label"), *rest)


async def cmd_show(api: Api, args: argparse.Namespace) -> int:
    if args.label:
        block = await api.get(block_path(api, args.agent, args.label))
        if args.json:
            print_json(block)
        else:
            write_exact(block.get("value") or "")
        return 0
    blocks = (await api.get(api.agent_path(args.agent, "blocks"))).get("data", [])
    if args.json:
        print_json(blocks)
        return 0
    for i, block in enumerate(blocks):
        if i:
            print()
        print(block_heading(block))
        if block.get("description"):
            print(f"  ({one_line(block['description'], 100)})")
        print(indent(block.get("value") or "", "  "))
    if not blocks:
        print("(no blocks)")
    return 0


def write_exact(value: str) -> None:
    """`value` on stdout byte for byte (UTF-8, `\r` and a missing final newline kept), so that
    `memory show a human > f` then `memory set a human - < f` changes nothing. On a terminal a
    value without a final newline is followed by one on stderr, so the prompt starts a new line
    without adding anything to what a pipe or file receives."""
    sys.stdout.flush()
    sys.stdout.buffer.write(value.encode("utf-8"))
    sys.stdout.buffer.flush()
    if value and not value.endswith("\n") and sys.stdout.isatty():
        sys.stderr.write("\n")
        sys.stderr.flush()


def read_exact_stdin() -> str:
    """All of stdin as UTF-8, exactly: no newline translation (text-mode stdin would turn
    `\r\n` into `\n`) and no locale-dependent decoding."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream without bytes underneath (an embedding program's)
        return sys.stdin.read()
    data = raw.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"stdin is not UTF-8 text ({exc.reason} at byte {exc.start})",
                       code=2) from exc


def _put_body(value: str, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"value": value}
    if getattr(args, "description", None) is not None:
        body["description"] = args.description
    if getattr(args, "limit", None) is not None:
        body["limit"] = args.limit
    return body


def _saved(block: dict[str, Any]) -> str:
    return f"saved {block_heading(block)}"


async def cmd_set(api: Api, args: argparse.Namespace) -> int:
    value = read_exact_stdin() if args.value == "-" else args.value
    block = await api.put(block_path(api, args.agent, args.label), _put_body(value, args))
    print(_saved(block))
    return 0


def editor_command() -> list[str]:
    """$VISUAL, else $EDITOR, else vi, split like a shell would."""
    raw = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    command = shlex.split(raw)
    if not command:
        raise CliError("$EDITOR is empty")
    return command


def edited_value(original: str, edited: str) -> str:
    """Editors add a final newline; drop it again when the original had none."""
    if not original.endswith("\n") and edited.endswith("\n"):
        return edited[:-1]
    return edited


async def cmd_edit(api: Api, args: argparse.Namespace) -> int:
    path = block_path(api, args.agent, args.label)
    block = await api.get(path)
    original = block.get("value") or ""
    fd, name = tempfile.mkstemp(prefix=f"memproxy-{args.label}-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(original)
        command = editor_command()
        try:
            result = subprocess.run([*command, name], check=False)
        except OSError as exc:
            raise CliError(f"cannot run the editor {command[0]!r}: {exc.strerror or exc}"
                           ) from exc
        if result.returncode != 0:
            raise CliError(f"the editor exited with status {result.returncode}; nothing saved")
        with open(name, encoding="utf-8") as fh:
            value = edited_value(original, fh.read())
        if value == original:
            print(f"{args.label}: no change")
            return 0
        current = await api.get(path)
        if (current.get("value") or "") != original:
            keep = name + ".edited"
            os.replace(name, keep)
            raise CliError(f"{args.label} changed while you were editing; nothing saved, "
                           f"your text is in {keep}")
        saved = await api.put(path, {"value": value})
        print(_saved(saved))
        return 0
    finally:
        if os.path.exists(name):
            os.unlink(name)


def _change(revision: dict[str, Any]) -> str:
    old, new = revision.get("old_value") or "", revision.get("new_value") or ""
    return f"{len(old)}→{len(new)}"


async def cmd_history(api: Api, args: argparse.Namespace) -> int:
    body = await api.get(block_path(api, args.agent, args.label, "history"), limit=args.limit)
    revisions = body.get("data", [])
    if args.json:
        print_json(revisions)
        return 0
    rows = [
        [r["id"], format_time(r.get("created_at")), r.get("source", ""), _change(r),
         r.get("new_value") or ""]
        for r in revisions
    ]
    print(format_table(["REVISION", "WHEN", "SOURCE", "CHARS", "NEW VALUE"], rows,
                       empty="(no revisions)"))
    return 0


async def cmd_undo(api: Api, args: argparse.Namespace) -> int:
    body = {} if args.revision is None else {"revision": args.revision}
    block = await api.post(block_path(api, args.agent, args.label, "undo"), body)
    print(f"restored {block_heading(block)}")
    print(indent(block.get("value") or ""))
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser,
             json_out: argparse.ArgumentParser) -> None:
    memory = sub.add_parser(
        "memory", help="show and edit core memory blocks",
        description="Show, set, edit and undo an agent's core memory blocks. Every change is "
        "recorded as a revision (memory history).",
    )
    memory_sub = memory.add_subparsers(dest="memory_command", required=True, metavar="COMMAND")

    show = memory_sub.add_parser(
        "show", parents=[connection, json_out], help="all blocks, or one block's value",
        description="Show every block of AGENT, or only LABEL's value: exactly its text, "
        "with no newline added, so `memory show A L > f` and `memory set A L - < f` round-trip.",
    )
    show.add_argument("agent", help="agent id")
    show.add_argument("label", nargs="?", help="block label, e.g. human")
    show.set_defaults(api_func=cmd_show)

    set_ = memory_sub.add_parser(
        "set", parents=[connection], help="replace a block's value (creates custom blocks)",
        description="Replace LABEL's value with VALUE ('-' reads it from stdin, exactly as given: "
        "UTF-8, no newline added or removed). A new label "
        "creates a custom block.",
    )
    set_.add_argument("agent", help="agent id")
    set_.add_argument("label", help="block label")
    set_.add_argument("value", help="the new value, or - to read stdin")
    set_.add_argument("--description", help="also set the block's description")
    set_.add_argument("--limit", type=positive_int,
                      help="also set the block's size limit (characters)")
    set_.set_defaults(api_func=cmd_set)

    edit = memory_sub.add_parser(
        "edit", parents=[connection], help="edit a block in $VISUAL / $EDITOR",
        description="Open LABEL's value in $VISUAL or $EDITOR (default vi) and save it when "
        "it changed. Refuses to save if the block changed meanwhile.",
    )
    edit.add_argument("agent", help="agent id")
    edit.add_argument("label", help="block label")
    edit.set_defaults(api_func=cmd_edit)

    history = memory_sub.add_parser(
        "history", parents=[connection, json_out], help="a block's revisions, newest first",
        description="List LABEL's revisions, newest first: who changed it (a memory tool, the "
        "API, an undo, an import) and the new value.",
    )
    history.add_argument("agent", help="agent id")
    history.add_argument("label", help="block label")
    history.add_argument("--limit", type=positive_int, help="at most this many revisions")
    history.set_defaults(api_func=cmd_history)

    undo = memory_sub.add_parser(
        "undo", parents=[connection], help="restore a block to before a revision",
        description="Restore LABEL to its value before REVISION (default: the newest "
        "revision). The undo is itself recorded as a revision.",
    )
    undo.add_argument("agent", help="agent id")
    undo.add_argument("label", help="block label")
    undo.add_argument("--revision", type=int, help="revision id (see memory history)")
    undo.set_defaults(api_func=cmd_undo)
