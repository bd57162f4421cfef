"""`memproxy load AGENT FILES...`: put documents into an agent's archival memory (#7.5).

Each file is split into overlapping passages on heading and paragraph boundaries
(`proxy.core.chunking`), and each passage is stored through `POST /v1/agents/{a}/passages`, tagged
`file:NAME` plus `--tags`, so the model finds it with `archival_memory_search` and an operator
can list or delete one file's passages by tag.

Loading is idempotent: `file:NAME` is the file's identity in the agent's archive. Before
storing, the passages already tagged `file:NAME` are read back; a new passage whose text and
tags equal one of them is skipped, and the old passages the new split no longer produces (the
file changed, or `--chunk-chars`/`--tags` did) are deleted after the new ones are stored. So the
archive holds the file as it is now, once, however often it is loaded; an interrupted load is
finished by running it again. The work is done through the REST API, the same on every backend.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP, split_text
from .client import Api
from .common import CliError, non_negative_int, parse_tags, positive_int

SUFFIXES = (".txt", ".md", ".markdown")
FILE_TAG = "file:"
PAGE = 1000
# Consecutive passages share at most this share of a passage: past it a document is stored
# several times over (overlap 90 % of 1500 characters: every character in ten passages).
MAX_OVERLAP_SHARE = 4


def max_overlap(chunk_chars: int) -> int:
    """The largest `--overlap` allowed with `chunk_chars`: a quarter of it."""
    return chunk_chars // MAX_OVERLAP_SHARE


def read_document(path: str) -> str:
    """The text of a .txt / .md file, or a CliError saying why not."""
    if not path.lower().endswith(SUFFIXES):
        raise CliError(f"{path}: load reads text files ({', '.join(SUFFIXES)})")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


def passages_for(text: str, chunk_chars: int, overlap: int) -> list[str]:
    """The passages to store: each chunk without surrounding blank space; empty ones dropped."""
    passages = []
    for chunk in split_text(text, chunk_chars, overlap):
        stripped = chunk.text.strip()
        if stripped:
            passages.append(stripped)
    return passages


@dataclass
class Plan:
    """What loading one file changes: passages to add, stored ones to delete, and how many
    stored ones are kept as they are."""

    add: list[str]
    delete: list[int]
    kept: int


def plan_file(passages: Iterable[str], tags: list[str],
              stored: Iterable[dict[str, Any]]) -> Plan:
    """Match the new passages against the stored ones of the same file (pure).

    A stored passage counts as present when its text and its tags (in order) are the new
    passage's; each stored passage matches at most one new one, so a text the file holds twice
    is stored twice. Unmatched stored passages are deleted; unmatched new ones added."""
    available: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for passage in stored:
        key = (passage.get("text") or "", tuple(passage.get("tags") or []))
        available.setdefault(key, []).append(int(passage["id"]))
    add: list[str] = []
    kept = 0
    for text in passages:
        ids = available.get((text, tuple(tags)))
        if ids:
            ids.pop()
            kept += 1
        else:
            add.append(text)
    delete = sorted(pk for ids in available.values() for pk in ids)
    return Plan(add, delete, kept)


async def stored_passages(api: Api, path: str, tag: str) -> list[dict[str, Any]]:
    """Every passage of the agent tagged `tag` (the API pages them by offset)."""
    found: list[dict[str, Any]] = []
    while True:
        body = await api.get(path, tags=tag, limit=PAGE, offset=len(found))
        found.extend(body.get("data", []))
        if not body.get("has_more"):
            return found


def _check_name(name: str, path: str) -> str:
    # The API filters by comma-separated tags (`?tags=file:NAME`): a comma would split it.
    if not name or name != name.strip() or "," in name:
        raise CliError(f"{path}: {name!r} cannot name a file in its file:NAME tag (no commas, "
                       "no surrounding spaces); choose one with --name", code=2)
    return name


def document_names(files: list[str], name: str | None) -> list[str]:
    """The name each file is known by (its `file:` tag); two files may not share one."""
    if name is not None:
        if len(files) != 1:
            raise CliError("--name names one file; load the files one at a time", code=2)
        return [_check_name(name, files[0])]
    names = [_check_name(os.path.basename(f), f) for f in files]
    for clash, count in Counter(names).items():
        if count > 1:
            raise CliError(f"two files are named {clash}: each file is known by its name "
                           "(file:NAME); load them one at a time with --name", code=2)
    return names


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _summary(name: str, path: str, text: str, total: int, plan: Plan) -> str:
    changes = [f"{len(plan.add)} new"]
    if plan.kept:
        changes.append(f"{plan.kept} unchanged")
    if plan.delete:
        changes.append(f"{len(plan.delete)} old removed")
    label = path if name == os.path.basename(path) else f"{path} (as {name})"
    return (f"{label}: {plural(total, 'passage')} ({plural(len(text), 'character')}; "
            f"{', '.join(changes)})")


async def cmd_load(api: Api, args: argparse.Namespace) -> int:
    overlap = args.overlap
    limit = max_overlap(args.chunk_chars)
    if overlap is None:
        overlap = min(DEFAULT_OVERLAP, limit)
    elif overlap > limit:
        raise CliError(f"--overlap ({overlap}) may be at most a quarter of --chunk-chars "
                       f"({args.chunk_chars}), i.e. {limit}", code=2)
    tags = parse_tags(args.tags)
    names = document_names(args.files, args.name)
    # Read and split everything first: a bad file fails the command before anything is stored.
    documents = [(path, name, read_document(path))
                 for path, name in zip(args.files, names, strict=True)]
    await api.get(api.agent_path(args.agent))  # an unknown agent fails with the API's message
    path = api.agent_path(args.agent, "passages")
    added = deleted = 0
    for file_path, name, text in documents:
        passages = passages_for(text, args.chunk_chars, overlap)
        file_tags = [f"{FILE_TAG}{name}", *tags]
        plan = plan_file(passages, file_tags, await stored_passages(api, path, file_tags[0]))
        for passage in plan.add:  # first the new passages: an interruption loses nothing
            await api.post(path, {"text": passage, "tags": file_tags})
        for pk in plan.delete:
            await api.delete(f"{path}/{pk}")
        added += len(plan.add)
        deleted += len(plan.delete)
        print(_summary(name, file_path, text, len(passages), plan))
    removed = f", removed {deleted} old" if deleted else ""
    print(f"loaded {plural(added, 'new passage')} into agent {args.agent}{removed}")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser) -> None:
    load = sub.add_parser(
        "load", parents=[connection], help="load .txt/.md files into archival memory",
        description="Split text files into overlapping passages on heading and paragraph "
        "boundaries and store them in AGENT's archival memory, each tagged file:NAME "
        "(plus --tags), where the model finds them with archival_memory_search. Loading a "
        "file again stores only what changed: passages already there are kept, and those "
        "of an older version of the file are removed.",
    )
    load.add_argument("agent", help="agent id (create it first: agents create)")
    load.add_argument("files", nargs="+", metavar="FILE", help=".txt or .md files")
    load.add_argument("--chunk-chars", type=positive_int, default=DEFAULT_CHUNK_CHARS,
                      help=f"largest passage in characters (default {DEFAULT_CHUNK_CHARS})")
    load.add_argument("--overlap", type=non_negative_int,
                      help="characters shared by consecutive passages (default "
                      f"{DEFAULT_OVERLAP}, at most a quarter of --chunk-chars)")
    load.add_argument("--tags", help="extra tags for every passage, comma-separated")
    load.add_argument("--name", help="the name the file is known by, in its file:NAME tag "
                      "(default: its file name; one file only)")
    load.set_defaults(api_func=cmd_load)
