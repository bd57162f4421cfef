"""The five memory tools (docs/design.md §3.5): schemas offered to the model and their execution.

Names and parameters are MemGPT/Letta's, so models and prompts that know them work unchanged.
Edits to core memory and new archival passages are applied to an in-memory `MemoryState` and
written with the rest of the turn in one transaction; searches read the store. Any problem
(unknown label, text not found, read-only block, over the limit, bad arguments) becomes the
tool's result text so the model can correct itself; nothing here fails the request.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .dates import parse_date, stamp
from .hit_context import NOTHING, NeighbourSource, arrange, hit_entry, without_context
from .types import Block, BlockRevision, MessageHit, Passage


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_TAGS = {"type": "array", "items": {"type": "string"}, "description": "Optional tags."}

MEMORY_TOOLS: list[dict[str, Any]] = [
    _fn(
        "core_memory_append",
        "Append a line to one of your core memory blocks (always visible to you).",
        {
            "label": {"type": "string", "description": "The block to edit, e.g. 'human'."},
            "content": {"type": "string", "description": "Text to append."},
        },
        ["label", "content"],
    ),
    _fn(
        "core_memory_replace",
        "Replace exact text in a core memory block. An empty new_content deletes the text.",
        {
            "label": {"type": "string", "description": "The block to edit."},
            "old_content": {"type": "string", "description": "Exact text to replace."},
            "new_content": {"type": "string", "description": "Replacement text."},
        },
        ["label", "old_content", "new_content"],
    ),
    _fn(
        "archival_memory_insert",
        "Save a passage to archival memory, a searchable long-term store.",
        {"content": {"type": "string", "description": "Text to store."}, "tags": _TAGS},
        ["content"],
    ),
    _fn(
        "archival_memory_search",
        "Search archival memory; returns the best matching passages with timestamps.",
        {
            "query": {"type": "string", "description": "What to look for."},
            "tags": _TAGS,
            "top_k": {"type": "integer", "description": "How many results (default 5)."},
        },
        ["query"],
    ),
    _fn(
        "conversation_search",
        "Search past messages with the user, including ones no longer in context.",
        {
            "query": {"type": "string", "description": "What to look for."},
            "roles": {
                "type": "array",
                "items": {"type": "string", "enum": ["user", "assistant", "tool"]},
                "description": "Only messages with these roles.",
            },
            "limit": {"type": "integer", "description": "How many results (default 5)."},
            "start_date": {"type": "string",
                           "description": "Earliest date, YYYY-MM-DD (or YYYY-MM, YYYY)."},
            "end_date": {"type": "string",
                         "description": "Latest date, included: YYYY-MM-DD (or YYYY-MM, YYYY)."},
        },
        ["query"],
    ),
]

MEMORY_TOOL_NAMES = frozenset(t["function"]["name"] for t in MEMORY_TOOLS)
# The tools that only read memory: all a temporary chat may use (turn/ephemeral.py).
MEMORY_SEARCH_TOOL_NAMES = frozenset({"archival_memory_search", "conversation_search"})


def memory_tools_for(client_tools: list[dict[str, Any]], *, read_only: bool = False
                     ) -> list[dict[str, Any]]:
    """The tools offered upstream: memory tools (unless the client has one of the same name;
    with `read_only`, only the searches) followed by the client's own."""
    client_names = {(t.get("function") or {}).get("name") for t in client_tools}
    return [t for t in MEMORY_TOOLS
            if t["function"]["name"] not in client_names
            and (not read_only or t["function"]["name"] in MEMORY_SEARCH_TOOL_NAMES)
            ] + client_tools


def _fit_results(results: list[dict[str, Any]], max_chars: int) -> str:
    """JSON of as many results (best first) as fit in `max_chars`."""
    while True:
        text = json.dumps(results, ensure_ascii=False)
        if len(text) <= max_chars or len(results) <= 1:
            break
        results = results[:-1]
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    return text
MAX_RESULTS = 50
MAX_RESULT_CHARS = 1000


class SearchBackend(Protocol):
    """Where the memory tools search: the store's full-text search, or hybrid search."""

    async def search_passages(
        self, agent_pk: int, query: str, *, tags: list[str] | None = None, top_k: int = 5
    ) -> list[Passage]: ...

    async def search_messages(
        self,
        agent_pk: int,
        query: str,
        *,
        roles: list[str] | None = None,
        limit: int = 10,
        start: float | None = None,
        end: float | None = None,
        newest: int | None = None,
    ) -> list[MessageHit]:
        """Ranked hits among the agent's messages, evicted ones included (with `newest`, among
        the newest that many full-text matches only: a bound on the cost)."""


@dataclass
@dataclass
class ToolContext:
    """What searches need besides memory: where to search and what to leave out."""

    store: SearchBackend
    agent_pk: int
    conversation_id: str | None = None
    current_turn_from_seq: int | None = None  # the running turn's own messages are not "past"
    max_result_chars: int = 16_000  # a search result list is cut to fit the context window
    # The turns around each conversation_search hit (core/hit_context.py): up to this many
    # on each side, read from `neighbours`; 0 or None: the hits alone.
    neighbours: NeighbourSource | None = None
    neighbour_count: int = 0

    def is_current(self, hit: MessageHit) -> bool:
        return (
            self.current_turn_from_seq is not None
            and hit.conversation_id == self.conversation_id
            and hit.seq >= self.current_turn_from_seq
        )


@dataclass
class MemoryState:
    """Core memory as the turn sees it, with the edits made so far."""

    blocks: dict[str, Block]
    changed: set[str] = field(default_factory=set)
    new_passages: list[tuple[str, list[str]]] = field(default_factory=list)
    revisions: list[BlockRevision] = field(default_factory=list)  # every edit, in order
    # The most passages this turn may add ([limits] archival_inserts_per_turn, and the room
    # left under passages_per_agent when the turn started); None = no quota.
    passage_quota: int | None = None
    # [limits] passages_per_agent itself (0 = off): the store checks it again on commit.
    passage_cap: int = 0

    @classmethod
    def of(cls, blocks: list[Block]) -> MemoryState:
        return cls({b.label: Block(**vars(b)) for b in blocks})

    def changed_blocks(self) -> list[Block]:
        return [self.blocks[label] for label in self.changed]


class ToolError(Exception):
    """A problem the model should read and fix."""


def _require_str(args: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f"parameter '{name}' is required and must be a string")
    if not allow_empty and not value.strip():
        raise ToolError(f"parameter '{name}' must not be empty")
    return value


def _int(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    try:
        value = int(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"parameter '{name}' must be an integer") from exc
    return max(1, min(value, MAX_RESULTS))


def _tags(args: dict[str, Any]) -> list[str] | None:
    tags = args.get("tags")
    if tags is None or tags == []:
        return None
    if isinstance(tags, str):
        return [tags]
    if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
        return tags
    raise ToolError("parameter 'tags' must be a list of strings")


def _date(value: Any, name: str, *, end: bool) -> float | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ToolError(f"parameter '{name}' must be a date like 2024-05-31")
    try:
        return parse_date(str(value), end=end)
    except ValueError as exc:
        raise ToolError(f"parameter '{name}' must be a date like 2024-05-31") from exc


def _block(state: MemoryState, label: str, *, writing: bool) -> Block:
    block = state.blocks.get(label)
    if block is None:
        known = ", ".join(sorted(state.blocks)) or "none"
        raise ToolError(f"no memory block labelled '{label}'; the blocks are: {known}")
    if writing and block.read_only:
        raise ToolError(f"block '{label}' is read-only and cannot be edited")
    return block


def _set_value(state: MemoryState, block: Block, value: str, source: str) -> str:
    if len(value) > block.limit:
        raise ToolError(
            f"block '{block.label}' would have {len(value)} characters, over its limit of"
            f" {block.limit} (it has {len(block.value)} now). Shorten the text, or make room"
            " with core_memory_replace, or move details to archival_memory_insert."
        )
    if value != block.value:
        state.revisions.append(BlockRevision(block.label, block.value, value, source))
    block.value = value
    block.updated_at = time.time()
    state.changed.add(block.label)
    return f"OK: block '{block.label}' now has {len(value)} of {block.limit} characters."


def core_memory_append(state: MemoryState, args: dict[str, Any]) -> str:
    block = _block(state, _require_str(args, "label"), writing=True)
    content = _require_str(args, "content")
    value = f"{block.value}\n{content}" if block.value else content
    return _set_value(state, block, value, "tool:core_memory_append")


def core_memory_replace(state: MemoryState, args: dict[str, Any]) -> str:
    block = _block(state, _require_str(args, "label"), writing=True)
    old = _require_str(args, "old_content")
    new = _require_str(args, "new_content", allow_empty=True)
    if old not in block.value:
        raise ToolError(
            f"the text {old!r} does not occur in block '{block.label}'; copy it exactly"
            " from the block's <value>"
        )
    value = block.value.replace(old, new)
    if not new:  # deleting a line should not leave an empty line behind
        value = "\n".join(line for line in value.split("\n") if line.strip())
    return _set_value(state, block, value, "tool:core_memory_replace")


def archival_memory_insert(state: MemoryState, args: dict[str, Any]) -> str:
    content = _require_str(args, "content")
    if state.passage_quota is not None and len(state.new_passages) >= state.passage_quota:
        raise ToolError(f"archival memory quota reached ({state.passage_quota} more passages"
                        " allowed in this turn); nothing saved")
    state.new_passages.append((content, _tags(args) or []))
    return "OK: saved to archival memory."


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


async def archival_memory_search(
    state: MemoryState, args: dict[str, Any], ctx: ToolContext
) -> str:
    query = _require_str(args, "query", allow_empty=True)
    tags = _tags(args)
    top_k = _int(args, "top_k", 5)
    words = {w.lower() for w in query.split()}
    pending = [
        {"timestamp": stamp(time.time()), "content": _clip(text), "tags": t}
        for text, t in state.new_passages
        if (not tags or set(tags) <= set(t)) and (not words or words & set(text.lower().split()))
    ]
    found = await ctx.store.search_passages(ctx.agent_pk, query, tags=tags, top_k=top_k)
    results = pending + [
        {"timestamp": stamp(p.created_at), "content": _clip(p.text), "tags": p.tags}
        for p in found
    ]
    if not results:
        return "No results found in archival memory."
    return _fit_results(results[:top_k], ctx.max_result_chars)


async def conversation_search(
    state: MemoryState, args: dict[str, Any], ctx: ToolContext
) -> str:
    query = _require_str(args, "query", allow_empty=True)
    roles = args.get("roles") or None
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise ToolError("parameter 'roles' must be a list such as [\"user\", \"assistant\"]")
    limit = _int(args, "limit", 5)
    start = _date(args.get("start_date"), "start_date", end=False)
    end = _date(args.get("end_date"), "end_date", end=True)
    hits = await ctx.store.search_messages(
        ctx.agent_pk, query, roles=roles, limit=limit + 4, start=start, end=end
    )
    hits = [h for h in hits if not ctx.is_current(h)][:limit]
    if not hits:
        return "No matching messages found in recall memory."
    around = [NOTHING] * len(hits)
    if ctx.neighbours is not None and ctx.neighbour_count > 0:
        found = await ctx.neighbours.message_neighbours(
            ctx.agent_pk, [(h.conversation_id, h.seq) for h in hits], ctx.neighbour_count)
        around = arrange(hits, found, leave_out=ctx.is_current)
    results = [hit_entry(h, a, MAX_RESULT_CHARS) for h, a in zip(hits, around, strict=True)]
    return _fit_results(_trade_context(results, ctx.max_result_chars), ctx.max_result_chars)


def _trade_context(results: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """Over budget, the lowest-ranked hits lose their neighbouring turns first (then
    `_fit_results` drops hits): the budget buys hits before context."""
    results = list(results)
    for index in range(len(results) - 1, -1, -1):
        if len(json.dumps(results, ensure_ascii=False)) <= max_chars:
            break
        results[index] = without_context(results[index])
    return results


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A memory tool call's arguments as a dict, or a `ToolError` the model is told about:
    the upstream's bad arguments never become a 500 (issue #21.6)."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, dict):
        parsed = raw
    else:
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ToolError(
                f"the arguments are not valid JSON ({exc}); send a JSON object") from exc
        except RecursionError:
            raise ToolError(
                "the arguments are nested too deeply; send a flat JSON object") from None
    if not isinstance(parsed, dict):
        raise ToolError("the arguments must be a JSON object")
    if not _encodable(parsed):
        # `"\ud800"` is valid JSON but no text: it could be neither stored nor sent on
        raise ToolError("the arguments hold a lone UTF-16 surrogate (\\ud800-\\udfff escape);"
                        " send valid Unicode text")
    return parsed


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def execute_memory_tool(
    name: str, raw_arguments: Any, state: MemoryState, ctx: ToolContext
) -> tuple[str, bool]:
    """Run one memory tool. Returns (result text for the model, ok)."""
    try:
        args = parse_arguments(raw_arguments)
        if name == "core_memory_append":
            return core_memory_append(state, args), True
        if name == "core_memory_replace":
            return core_memory_replace(state, args), True
        if name == "archival_memory_insert":
            return archival_memory_insert(state, args), True
        if name == "archival_memory_search":
            return await archival_memory_search(state, args, ctx), True
        if name == "conversation_search":
            return await conversation_search(state, args, ctx), True
        raise ToolError(f"unknown memory tool '{name}'")
    except ToolError as exc:
        return f"Error: {exc}", False


def unknown_tool_result(name: str, available: list[str]) -> str:
    """The tool result for a call of a tool nobody offered (a made-up name): the model reads
    which tools exist and can answer or call one of them instead."""
    shown = name if len(name) <= 64 else name[:64] + "…"
    known = ", ".join(available) or "none"
    return f"Error: there is no tool named '{shown}'. The available tools are: {known}."
