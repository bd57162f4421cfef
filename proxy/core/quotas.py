"""Per-tenant quotas as plain decisions (docs/forgetting.md, "Quotas"); 0 = off.

The checks that must not overshoot run inside the stores' write transactions (an agent
created, a passage added over the REST API); these helpers only say what a number allows.
"""

from __future__ import annotations

from typing import Protocol


class QuotaLimits(Protocol):
    agents_per_tenant: int
    passages_per_agent: int
    archival_inserts_per_turn: int


def passage_quota(limits: QuotaLimits, passages_now: int) -> int | None:
    """How many passages a turn may add: the per-turn cap and the room left under the agent's
    cap (counted when the turn started, a number every turn reads anyway); None = no quota."""
    caps = []
    if limits.archival_inserts_per_turn:
        caps.append(limits.archival_inserts_per_turn)
    if limits.passages_per_agent:
        caps.append(max(0, limits.passages_per_agent - passages_now))
    return min(caps) if caps else None


def exceeded_message(quota: str, limit: int) -> str:
    return f"quota exceeded: [limits] {quota} = {limit}"
