"""Deciding which in-context messages leave the context window (docs/design.md §4.1).

Pure arithmetic over token counts, so the policy can be tested exhaustively and the turn service
only has to turn a `Plan` into store updates and a summarizer call.

Why the rules are what they are:
- Compaction starts at `compact_at` (0.9) but goes down to `compact_to` (0.6), so a compaction
  (and its summarizer call, which busts the provider's prompt cache) happens once every many
  turns instead of on every turn near the limit (the hysteresis Letta also uses).
- A cut never keeps a tool result without the assistant message that called it: OpenAI and
  most other upstreams reject such a prompt, and it is the "context-overflow errors the
  summarizer did not prevent" failure Letta users reported, in another shape.
- Cutting before a user message is preferred because the kept context then starts at a turn
  boundary; several chat templates (Llama, Mistral, Anthropic adapters) require the first
  non-system message to be a user message. Inside one giant turn (a long tool loop) no user
  boundary may help, so any non-tool cut is the fallback.
- The running turn's input is protected: evicting the very question being answered would make
  the answer nonsense. Whatever cannot be evicted is reported (`fits`, "cannot_fit") rather
  than raised: the caller decides between a retry, a 400 and sending anyway.
- Everything is one pass with prefix sums: conversations can hold thousands of messages and
  this runs on every turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

UNDER_THRESHOLD = "under_threshold"
COMPACTED = "compacted"
CANNOT_FIT = "cannot_fit"
FORCED = "forced"


@dataclass(frozen=True)
class Budget:
    """The token budget of one upstream request; all counts already calibrated."""

    window: int  # the model's context window, tokens
    reserve_output: int  # tokens kept free for the answer
    fixed: int  # system prompt, summary note, tool schemas: everything not evictable
    warn_at: float = 0.75
    compact_at: float = 0.9
    compact_to: float = 0.6

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError("window must be positive")
        if self.reserve_output < 0 or self.fixed < 0:
            raise ValueError("reserve_output and fixed must not be negative")


class Item(NamedTuple):
    """One in-context message, oldest first. (A named tuple: a turn builds one per message
    in context, and a tuple is several times cheaper to build than a frozen dataclass.)"""

    seq: int
    role: str  # "user" | "assistant" | "tool" | "system"
    tokens: int  # calibrated token count of the message
    has_tool_calls: bool = False


@dataclass(frozen=True)
class Plan:
    evict_through_seq: int | None  # evict every item with seq <= this (None: evict nothing)
    evicted: int  # number of items evicted
    tokens_before: int  # fixed + sum(items) + reserve_output
    tokens_after: int
    fits: bool  # tokens_after <= window
    warn: bool  # after the plan, usage >= warn_at * window
    reason: str  # "under_threshold" | "compacted" | "cannot_fit" | "forced"


def item_for(seq: int, message: dict[str, Any], tokens: int) -> Item:
    """An `Item` for an OpenAI message dict (a convenience for the caller)."""
    role = str(message.get("role", ""))
    if role == "function":  # the legacy tool-result role: same pairing rule as "tool"
        role = "tool"
    return Item(seq=seq, role=role, tokens=tokens, has_tool_calls=bool(message.get("tool_calls")))


def total(budget: Budget, items: Sequence[Item]) -> int:
    """Tokens the request needs: fixed + every item + the reserved output."""
    return budget.fixed + sum(item.tokens for item in items) + budget.reserve_output


def fits_alone(budget: Budget, input_tokens: int) -> bool:
    """Whether the running turn's input fits with nothing else evictable left in context.

    If not, no amount of eviction helps and the request is a 400 `context_length_exceeded`.
    """
    return budget.fixed + input_tokens + budget.reserve_output <= budget.window


def protected_index(items: Sequence[Item], protect_from_seq: int | None) -> int:
    """Index of the first protected item (len(items) when nothing is protected)."""
    if protect_from_seq is None:
        return len(items)
    for index, item in enumerate(items):
        if item.seq >= protect_from_seq:
            return index
    return len(items)


def is_cut_point(items: Sequence[Item], k: int) -> bool:
    """Whether keeping `items[k:]` (evicting `items[:k]`) is a valid cut.

    k == 0 (keep all) and k == len(items) (keep none) are always valid; otherwise the first
    kept item must not be a tool result, which would lose the call it answers.
    """
    return k <= 0 or k >= len(items) or items[k].role != "tool"


def is_turn_start(items: Sequence[Item], k: int) -> bool:
    """Whether the cut keeping `items[k:]` starts the kept context at a user message."""
    return 0 <= k < len(items) and items[k].role == "user"


def cut_points(items: Sequence[Item], *, protect_from_seq: int | None = None) -> list[int]:
    """All valid cuts k (evict `items[:k]`) that keep the protected items, ascending."""
    limit = protected_index(items, protect_from_seq)
    return [k for k in range(limit + 1) if is_cut_point(items, k)]


def under_threshold(budget: Budget, before: int, force_to: float | None = None) -> Plan | None:
    """The plan when `before` (total tokens) is under `compact_at` and nothing is forced —
    evict nothing — else None. Needs no items, so a turn under the threshold builds none."""
    if force_to is None and before <= budget.compact_at * budget.window:
        return Plan(evict_through_seq=None, evicted=0, tokens_before=before, tokens_after=before,
                    fits=before <= budget.window, warn=before >= budget.warn_at * budget.window,
                    reason=UNDER_THRESHOLD)
    return None


def plan(
    budget: Budget,
    items: Sequence[Item],
    *,
    protect_from_seq: int | None = None,
    force_to: float | None = None,
) -> Plan:
    """Choose how many of the oldest items to evict; see the module docstring for why.

    Under `compact_at` (and without `force_to`) nothing is evicted. Otherwise the target is
    `compact_to` (or `force_to`, used after the upstream still answered "context length
    exceeded") times the window, and the cut is the smallest user-message cut that reaches it,
    else the smallest non-tool cut that does, else the largest allowed cut (everything before
    the protected items). `reason` is "cannot_fit" when even that leaves the request over the
    window, "forced" when `force_to` was given, else "compacted" (possibly with nothing
    evicted, when every item is protected but the request still fits the window).
    """
    before = total(budget, items)
    window = budget.window
    quick = under_threshold(budget, before, force_to)
    if quick is not None:
        return quick

    target = (budget.compact_to if force_to is None else force_to) * window
    limit = protected_index(items, protect_from_seq)
    need = before - target  # tokens that must go; <= 0: already at the target
    first_user: int | None = None
    first_any: int | None = None
    last_valid = 0
    evicted_tokens = 0  # prefix sum: tokens of items[:k]
    for k in range(limit + 1):
        if k > 0:
            evicted_tokens += items[k - 1].tokens
        if not is_cut_point(items, k):
            continue
        last_valid = k
        if evicted_tokens >= need:
            if first_any is None:
                first_any = k
            if k == 0 or is_turn_start(items, k):
                first_user = k
                break  # any later cut evicts more for no benefit
    if first_user is not None:
        k = first_user
    elif first_any is not None:
        k = first_any
    else:
        k = last_valid
    after = before - sum(item.tokens for item in items[:k])
    if after > window:
        reason = CANNOT_FIT
    else:
        reason = COMPACTED if force_to is None else FORCED
    return _plan(budget, items, k, before, reason, after)


def _plan(
    budget: Budget,
    items: Sequence[Item],
    k: int,
    before: int,
    reason: str,
    after: int | None = None,
) -> Plan:
    after = before if after is None else after
    return Plan(
        evict_through_seq=items[k - 1].seq if k > 0 else None,
        evicted=k,
        tokens_before=before,
        tokens_after=after,
        fits=after <= budget.window,
        warn=after >= budget.warn_at * budget.window,
        reason=reason,
    )
