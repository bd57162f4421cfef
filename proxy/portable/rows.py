"""What both importers (the agent document, a Letta Agent File) check and derive the same way:
blocks with valid, unique labels, and turns for messages that came without any.

Its own module so that document.py can hand Letta files to letta.py without the two importing
each other.
"""

from __future__ import annotations

from ..core.identity import validate_id
from ..core.types import Block, StoredMessage
from ..errors import bad_request
from ..store.admin_types import TurnRecord


def checked_blocks(blocks: list[Block], field: str = "blocks") -> list[Block]:
    """Blocks with valid, unique labels and values within their limits (400 otherwise)."""
    seen: set[str] = set()
    for i, b in enumerate(blocks):
        validate_id(b.label, f"{field}[{i}].label")
        if b.label in seen:
            raise bad_request(f"{field}[{i}].label: block {b.label!r} is given twice",
                              param=f"{field}[{i}].label", code="duplicate_label")
        seen.add(b.label)
        if len(b.value) > b.limit:
            raise bad_request(f"{field}[{i}].value: {len(b.value)} characters, over the"
                              f" block's limit of {b.limit}", param=f"{field}[{i}].value",
                              code="block_too_long")
    return blocks


def synthesize_turns(messages: list[StoredMessage]) -> list[TurnRecord]:
    """Finished turns for messages that came without turn rows, so that the conversation
    continues as one with replies (a turn per distinct turn id, in order of first seq)."""
    turns: dict[str, TurnRecord] = {}
    for m in sorted(messages, key=lambda m: m.seq):
        turn = turns.get(m.turn_id)
        if turn is None:
            turns[m.turn_id] = TurnRecord(m.turn_id, "done", "", None, m.created_at,
                                          m.created_at, None, m.seq)
        else:
            turn.finished_at = m.created_at
    return list(turns.values())
