"""Automatic recall for a turn (docs/memory.md): one search of the agent's memory with the new
user message, before the call; the pure selection and rendering are `core/recall.py`.

`[memory] auto_recall` decides when: "no-tools" (the default) for models served without tools,
which have no other way to reach their past; "always" for every model, since weak models that
can call tools rarely call `conversation_search` when they should; "off" never. It searches
the same backend as the memory tools (full-text or hybrid, docs/search.md): the agent's
messages in all its conversations, and archival memory only when the agent has passages, so a
turn costs one indexed search in the common case. A search that fails costs the turn nothing
but the section.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .. import tokens
from ..core.hit_context import Around, NeighbourSource, arrange
from ..core.messages import content_text
from ..core.recall import candidates, recall_query, render_recall, select_snippets
from ..core.tools import SearchBackend
from ..core.types import Message, MessageHit, StoredMessage

log = logging.getLogger("memproxy.recall")

MESSAGE_HITS = 8
PASSAGE_HITS = 4
# Only the newest this many matches are ranked: ranking every match of a common word over a
# large agent costs tens of milliseconds; recent matches are the likelier relevant ones, and
# `conversation_search` still ranks everything when the model searches itself. Twice the
# candidates the search service re-ranks for recall's 8 hits (4 each): bm25 costs ~1 µs a
# row, so 200 cost ~0.45 ms a turn at 10k messages and 64 ~0.26 (bench overhead, c10k).
NEWEST_MATCHES = 64


def wanted(mode: str, *, tools: bool) -> bool:
    """Whether a turn gets automatic recall under `[memory] auto_recall = mode`."""
    return mode == "always" or (mode == "no-tools" and not tools)


async def recall_section(
    search: SearchBackend, *, agent_pk: int, conversation_id: str,
    new_input: Sequence[Message], context: Sequence[StoredMessage], archival_passages: int,
    budget_tokens: int, model: str, neighbours: NeighbourSource | None = None,
    neighbour_count: int = 0,
) -> str:
    """The `<recalled_memory>` section for this turn, or "" (no user message, no hit, no
    budget, or the search failed). Hits already in the prompt's context are left out; with
    `neighbour_count`, each hit comes with the turns around it (read from `neighbours` in one
    query; if that fails, the hits alone), those in the prompt left out too."""
    query = recall_query(new_input)
    if not query or budget_tokens <= 0:
        return ""
    try:
        hits = await search.search_messages(agent_pk, query, limit=MESSAGE_HITS,
                                            newest=NEWEST_MATCHES)
        passages = (await search.search_passages(agent_pk, query, top_k=PASSAGE_HITS)
                    if archival_passages else [])
    except Exception:
        log.exception("automatic recall: the search failed; the turn goes on without it")
        return ""
    # The context is the newest part of the conversation: a hit of this conversation at or
    # after its first message is in the prompt already (one comparison, however long it is).
    first_seq = context[0].seq if context else None

    def in_prompt(message: MessageHit) -> bool:
        return (message.conversation_id == conversation_id and first_seq is not None
                and message.seq >= first_seq)

    hits = [h for h in hits if not in_prompt(h)]
    around = await _around(neighbours, agent_pk, hits, neighbour_count, in_prompt)
    seen = [content_text(m.get("content")) for m in new_input]
    chosen = select_snippets(
        candidates(hits, passages, around), budget_tokens=budget_tokens,
        count=lambda text: tokens.count_text(text, model), seen=seen,
    )
    return render_recall(chosen)


async def _around(neighbours: NeighbourSource | None, agent_pk: int,
                  hits: Sequence[MessageHit], count: int,
                  in_prompt: Callable[[MessageHit], bool]) -> list[Around]:
    if neighbours is None or count <= 0 or not hits:
        return []
    try:
        found = await neighbours.message_neighbours(
            agent_pk, [(h.conversation_id, h.seq) for h in hits], count)
    except Exception:
        log.exception("automatic recall: reading the turns around the hits failed; the hits"
                      " go alone")
        return []
    return arrange(hits, found, leave_out=in_prompt)
