"""`memproxy load AGENT FILES...`: put documents into an agent's archival memory (#7.5).

Each file is split into overlapping passages on heading and paragraph boundaries
(`proxy.core.chunking`), and each passage is stored through `POST /v1/agents/{a}/passages`, tagged
`file:NAME` plus `--tags`, so the model finds it with `archival_memory_search` and an operator
can list or delete one file's passages by tag.
"""

from __future__ import annotations

import argparse
import os

from ..core.chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP, split_text
from .client import Api
from .common import CliError, non_negative_int, parse_tags, positive_int

SUFFIXES = (".txt", ".md", ".markdown")


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


async def cmd_load(api: Api, args: argparse.Namespace) -> int:
    overlap = args.overlap
    if overlap is None:
        overlap = min(DEFAULT_OVERLAP, args.chunk_chars // 4)
    if overlap >= args.chunk_chars:
        raise CliError(f"--overlap ({overlap}) must be less than --chunk-chars "
                       f"({args.chunk_chars})", code=2)
    tags = parse_tags(args.tags)
    # Read and split everything first: a bad file fails the command before anything is stored.
    documents = [(path, read_document(path)) for path in args.files]
    await api.get(api.agent_path(args.agent))  # an unknown agent fails with the API's message
    path = api.agent_path(args.agent, "passages")
    total = 0
    for name, text in documents:
        passages = passages_for(text, args.chunk_chars, overlap)
        file_tags = [f"file:{os.path.basename(name)}", *tags]
        for passage in passages:
            await api.post(path, {"text": passage, "tags": file_tags})
        total += len(passages)
        print(f"{name}: {len(passages)} passages ({len(text)} characters)")
    print(f"loaded {total} passages into agent {args.agent}")
    return 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser) -> None:
    load = sub.add_parser(
        "load", parents=[connection], help="load .txt/.md files into archival memory",
        description="Split text files into overlapping passages on heading and paragraph "
        "boundaries and store them in AGENT's archival memory, each tagged file:NAME "
        "(plus --tags), where the model finds them with archival_memory_search.",
    )
    load.add_argument("agent", help="agent id (create it first: agents create)")
    load.add_argument("files", nargs="+", metavar="FILE", help=".txt or .md files")
    load.add_argument("--chunk-chars", type=positive_int, default=DEFAULT_CHUNK_CHARS,
                      help=f"largest passage in characters (default {DEFAULT_CHUNK_CHARS})")
    load.add_argument("--overlap", type=non_negative_int,
                      help="characters shared by consecutive passages (default "
                      f"{DEFAULT_OVERLAP}, at most a quarter of --chunk-chars)")
    load.add_argument("--tags", help="extra tags for every passage, comma-separated")
    load.set_defaults(api_func=cmd_load)
