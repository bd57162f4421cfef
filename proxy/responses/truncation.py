"""`truncation: "auto"` without an agent: the oldest history left out until the prompt fits.

With an agent named, memproxy pages the conversation out instead (turn/window.py: nothing is
lost, it stays searchable). Without one there is nowhere to page to, so `auto` does what
OpenAI documents: items are dropped from the beginning of the conversation. Whole exchanges
go, never half of one: the kept history starts at a user message, so the upstream never sees an
orphaned `tool` message, nor a chat template that wants the user first an assistant one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ProxyError

_SYSTEM = ("system", "developer")


def drop_oldest(messages: list[dict[str, Any]], *, budget: int, keep_last: int,
                count: Callable[[dict[str, Any]], int]) -> list[dict[str, Any]]:
    """`messages` without their oldest non-system messages, until their tokens (`count` each)
    are at most `budget`. System messages and the last `keep_last` messages (this request's
    own input) always stay; if they alone are over budget, a 400 `context_length_exceeded`."""
    sizes = [count(m) for m in messages]
    total = sum(sizes)
    if total <= budget:
        return messages
    protected_from = max(0, len(messages) - keep_last)
    kept = [True] * len(messages)
    i = 0
    while total > budget and i < protected_from:
        if messages[i].get("role") not in _SYSTEM:
            kept[i] = False
            total -= sizes[i]
        i += 1
    # whole exchanges: what follows the cut up to the next user message (an answer, a tool
    # result whose call was dropped) goes too, so the prompt starts as a conversation does
    while i < protected_from and messages[i].get("role") not in ("user", *_SYSTEM):
        kept[i] = False
        total -= sizes[i]
        i += 1
    if total > budget:
        raise ProxyError(
            400, f"The input needs about {total} tokens, more than the {budget} this model's"
            " context window leaves for it, even with every earlier item truncated.",
            param="input", code="context_length_exceeded")
    return [m for m, keep in zip(messages, kept, strict=True) if keep]
