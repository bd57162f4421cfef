"""The system prompt memproxy sends upstream (docs/design.md §4.1), rendered from plain data.

Order matters for provider prompt caching: the stable parts (base instructions, the client's own
system text) come first, then the memory blocks, then metadata that changes every turn.
The block layout follows Letta's, which models trained on MemGPT-style prompts recognise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import content_text
from .types import Block, Message

BASE_INSTRUCTIONS = """\
You are a helpful assistant with a persistent memory that survives across conversations.

Memory works like this:
- Core memory (the <memory_blocks> below) is always visible to you. Keep it accurate: when you \
learn something lasting about the user or about how you should behave, save it with \
core_memory_append or correct it with core_memory_replace. Keep entries short.
- Archival memory is a searchable store for longer facts, documents and notes: use \
archival_memory_insert to save and archival_memory_search to look things up.
- Recall memory holds every past message, including ones no longer in this context window: \
use conversation_search to find what was said before.
Memory tools run silently; the user only sees your final reply. Never mention the tools or \
these instructions unless asked. After using a tool, answer the user normally."""

# For a model served without tools (models/tool_support.py): the same memory, read-only to it.
BASE_INSTRUCTIONS_NO_TOOLS = """\
You are a helpful assistant with a persistent memory that survives across conversations.

Memory works like this:
- Core memory (the <memory_blocks> below) holds what is known about the user and about how you \
should behave. It is always visible to you.
- Past messages, including ones from earlier conversations, and archival notes are searched for \
you automatically: those that may be relevant to the user's latest message are shown at the end \
of this message, with their dates, when there are any.
Use what you remember naturally. Never mention these instructions unless asked."""

SUMMARY_PREFIX = "Summary of the earlier part of this conversation (older messages are in recall memory):"


@dataclass(frozen=True)
class MemoryStats:
    recall_messages: int
    archival_passages: int
    last_modified: float | None

    @classmethod
    def of(cls, blocks: Sequence[Block], recall_messages: int, archival_passages: int
           ) -> MemoryStats:
        """The counts, and the blocks' newest change (None when no block was ever edited)."""
        newest = max((b.updated_at or 0 for b in blocks), default=None) or None
        return cls(recall_messages, archival_passages, newest)


def render_block(block: Block) -> str:
    tag = block.label
    meta = [f"- chars_current={len(block.value)}", f"- chars_limit={block.limit}"]
    if block.read_only:
        meta.insert(0, "- read_only=true")
    parts = [f"<{tag}>"]
    if block.description:
        parts.append(f"<description>\n{block.description}\n</description>")
    parts.append("<metadata>\n" + "\n".join(meta) + "\n</metadata>")
    parts.append(f"<value>\n{block.value}\n</value>")
    parts.append(f"</{tag}>")
    return "\n".join(parts)


def render_blocks(blocks: Sequence[Block]) -> str:
    inner = "\n\n".join(render_block(b) for b in blocks)
    return (
        "<memory_blocks>\nThe following memory blocks are currently engaged in your core memory"
        f" unit:\n\n{inner}\n</memory_blocks>"
    )


def _format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def render_metadata(stats: MemoryStats, now: float, *, tools: bool = True) -> str:
    lines = [f"- The current date is: {time.strftime('%Y-%m-%d', time.gmtime(now))}"]
    if stats.last_modified is not None:
        lines.append(f"- Memory blocks were last modified: {_format_time(stats.last_modified)}")
    recall_how = ("use conversation_search to access them" if tools
                  else "relevant ones are recalled for you automatically")
    archival_how = ("use archival_memory_search to access them" if tools
                    else "relevant ones are recalled for you automatically")
    lines.append(
        f"- {stats.recall_messages} previous messages between you and the user are stored in"
        f" recall memory ({recall_how})"
    )
    lines.append(
        f"- {stats.archival_passages} total memories you created are stored in archival memory"
        f" ({archival_how})"
    )
    return METADATA_OPEN + "\n" + "\n".join(lines) + "\n</memory_metadata>"


METADATA_OPEN = "<memory_metadata>"


def system_parts(system_text: str) -> tuple[str, str]:
    """`render_system`'s text as (what changes only with the memory and the client's system
    text, the metadata that changes every turn). Token counts of the first part are cached, so
    a turn counts only the few hundred characters of the second (~5 us instead of ~95 us)."""
    cut = system_text.rfind("\n\n" + METADATA_OPEN)
    return (system_text, "") if cut < 0 else (system_text[:cut], system_text[cut:])


def client_system_text(system_messages: Sequence[Message]) -> str:
    return "\n\n".join(content_text(m.get("content")) for m in system_messages)


def render_system(
    *,
    base_instructions: str,
    client_system: str,
    blocks: Sequence[Block],
    stats: MemoryStats,
    now: float,
    tools: bool = True,
    recall: str = "",
) -> str:
    """The single system message: instructions, the client's system text verbatim, memory,
    metadata, then the automatic recall section (`core/recall.py`) when there is one. Without
    `tools` the metadata does not point at the search tools."""
    parts = [base_instructions]
    if client_system:
        parts.append(client_system)
    parts.append(render_blocks(blocks))
    parts.append(render_metadata(stats, now, tools=tools))
    if recall:
        parts.append(recall)
    return "\n\n".join(parts)


def render_summary(summary: str) -> Message:
    return {"role": "system", "content": f"{SUMMARY_PREFIX}\n{summary}"}
