"""Automatic recall, the pure part: which search hits go into the prompt and how they read.

A model that cannot call tools (or a weak one that forgets to) never runs `conversation_search`
or `archival_memory_search`. So before the call memproxy searches recall and archival memory with
the new user message (turn/recall.py) and this module picks the best few hits that fit a token
budget, leaves out what the prompt already holds, and renders them, each with its date, in one
clearly marked section at the end of the system prompt (after the metadata, so the stable part
of the system prompt keeps its cached token count: `prompts.system_parts`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest

from .dates import stamp
from .hit_context import Around
from .messages import content_text
from .types import Message, MessageHit, Passage

RECALL_OPEN = "<recalled_memory>"
RECALL_CLOSE = "</recalled_memory>"
RECALL_HEADER = (
    "Automatically retrieved from your memory because it may be relevant to the user's latest"
    " message (earlier conversations and archival memory; it may be out of date, and the user"
    " has not seen it):"
)
SNIPPET_CHARS = 500  # a long hit is clipped: a few snippets beat one long one
NEIGHBOUR_CHARS = 200  # and a turn around it more (the section's budget is small)
QUERY_CHARS = 1000  # what of the user message is searched for
# A full-text search costs in proportion to how many rows its terms occur in: a paragraph's
# thirty words, each common, make one search tens of milliseconds over 20,000 messages, while a
# few distinctive words cost a millisecond or two. The longest words of the message are a good
# free guess at its distinctive ones ("What is my name?" → "name").
QUERY_TERMS = 4
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Snippet:
    """One candidate: a past message (`source` "user"/"assistant"/…) or an archival passage,
    with a message's neighbouring turns (`[memory] search_neighbours`, core/hit_context.py)."""

    source: str
    text: str
    created_at: float
    before: tuple[Snippet, ...] = ()
    after: tuple[Snippet, ...] = ()
    name: str | None = None  # a message's speaker name, when it has one

    def bare(self) -> Snippet:
        return replace(self, before=(), after=())


# The shortest line a snippet can have: what is left of a budget below its cost fits nothing.
_SHORTEST = Snippet("user", "x", 0.0)


def user_text(messages: Sequence[Message]) -> str:
    """The newest user message among `messages` (the turn's new input), clipped; "" when the
    turn brings none (a tool result, a regeneration)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content")).strip()[:QUERY_CHARS]
    return ""


def recall_query(messages: Sequence[Message]) -> str:
    """What automatic recall searches for: the `QUERY_TERMS` longest distinct words of the
    newest user message (in their order in it; words of one or two letters only when there is
    nothing else), or ""."""
    words: dict[str, None] = {}
    for word in _WORD.findall(user_text(messages)):
        words.setdefault(word.lower(), None)
    ranked = sorted(words, key=len, reverse=True)
    kept = set(([w for w in ranked if len(w) > 2] or ranked)[:QUERY_TERMS])
    return " ".join(w for w in words if w in kept)


def _said(message: MessageHit) -> Snippet:
    return Snippet(message.role, message.text, message.created_at, name=message.name)


def candidates(hits: Sequence[MessageHit], passages: Sequence[Passage],
               around: Sequence[Around] = ()) -> list[Snippet]:
    """Hits of both searches, best first, alternating (their scores are not comparable);
    `around[i]`, when given, holds the turns around `hits[i]`."""
    found = []
    for index, (hit, passage) in enumerate(zip_longest(hits, passages)):
        if hit is not None:
            context = around[index] if index < len(around) else None
            found.append(_said(hit) if context is None else replace(
                _said(hit), before=tuple(_said(m) for m in context.before),
                after=tuple(_said(m) for m in context.after)))
        if passage is not None:
            found.append(Snippet("archival", passage.text, passage.created_at))
    return found


def _key(text: str) -> str:
    return " ".join(text.split()).lower()


def _clip(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _said_line(snippet: Snippet, limit: int) -> str:
    if snippet.source == "archival":
        who = "archival memory"
    elif snippet.name:
        who = f"{snippet.name} ({snippet.source}) said"
    else:
        who = f"{snippet.source} said"
    return f"[{stamp(snippet.created_at)}] {who}: {_clip(snippet.text, limit)}"


def _context_lines(snippet: Snippet) -> list[str]:
    return ([f"  (before) {_said_line(s, NEIGHBOUR_CHARS)}" for s in snippet.before]
            + [f"  (after) {_said_line(s, NEIGHBOUR_CHARS)}" for s in snippet.after])


def render_line(snippet: Snippet) -> str:
    """`- [date] user said: …`, its neighbouring turns indented under it (marked before or
    after, so the hit stays the line that starts with `-`)."""
    return "\n".join([f"- {_said_line(snippet, SNIPPET_CHARS)}", *_context_lines(snippet)])


def select_snippets(
    found: Sequence[Snippet], *, budget_tokens: int, count: Callable[[str], int],
    seen: Collection[str] = (),
) -> list[Snippet]:
    """The best snippets whose rendered section fits `budget_tokens`, in order, without
    duplicates, empty texts or texts in `seen` (what the prompt already holds; compared
    without case and spacing). A snippet too big for what is left is skipped, not cut."""
    skip = {_key(t) for t in seen}
    left = budget_tokens - count(f"{RECALL_OPEN}\n{RECALL_HEADER}\n{RECALL_CLOSE}")
    shortest = count(render_line(_SHORTEST)) + 1
    chosen: list[Snippet] = []
    for snippet in found:
        if left < shortest:  # nothing fits any more: stop counting (this runs every turn)
            break
        key = _key(snippet.text)
        if not key or key in skip:
            continue
        snippet = replace(snippet, before=_unseen(snippet.before, skip | {key}),
                          after=_unseen(snippet.after, skip | {key}))
        # Each line is counted once, the hit's first: its context is added only if it fits
        # too (a line and its newline cost at most their counts plus one).
        cost = count(render_line(snippet.bare())) + 1
        if cost > left:
            continue
        context = sum(count(line) + 1 for line in _context_lines(snippet))
        if cost + context <= left:
            cost += context
        else:  # the hit alone, then
            snippet = snippet.bare()
        skip.update(_key(s.text) for s in (snippet, *snippet.before, *snippet.after))
        chosen.append(snippet)
        left -= cost
    return chosen


def _unseen(turns: tuple[Snippet, ...], skip: set[str]) -> tuple[Snippet, ...]:
    return tuple(s for s in turns if _key(s.text) and _key(s.text) not in skip)


def render_recall(snippets: Sequence[Snippet]) -> str:
    """The marked section, or "" when there is nothing to show."""
    if not snippets:
        return ""
    lines = "\n".join(render_line(s) for s in snippets)
    return f"{RECALL_OPEN}\n{RECALL_HEADER}\n{lines}\n{RECALL_CLOSE}"
