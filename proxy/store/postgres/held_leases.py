"""The conversation leases this store holds, so that a turn's `finish_turn` releases its lease
in the turn's own statement (issue 19: one round trip and one commit per write).

`turn/locks.py` takes a lease before a turn and releases it after; on Postgres each was a
round trip and a commit of its own. `acquire_lease` records the lease here; `finish_turn`
takes it out (`for_finish`) and deletes the row in the statement that stores the turn; the
`release_lease` that follows then finds it released (`release` says so) and sends nothing.
If that statement fails, the lease goes back (`restore`) and `release_lease` deletes it as
before. A renewal after the finish (`locks._renew` firing in between) records it again, so it
is deleted again: a lease is only ever skipped when the turn's own commit removed it.

Plain bookkeeping, no I/O. One turn per conversation runs at a time in a process (the
in-process lock is taken before the lease), so entries never race.
"""

from __future__ import annotations


class HeldLeases:
    def __init__(self) -> None:
        self._held: dict[int, str] = {}  # conversation_pk -> owner, taken and not released
        self._released: dict[int, str] = {}  # released by finish_turn, release_lease pending

    def taken(self, conversation_pk: int, owner: str) -> None:
        self._held[conversation_pk] = owner
        self._released.pop(conversation_pk, None)

    def for_finish(self, conversation_pk: int) -> str | None:
        """The owner whose lease the finishing turn's statement deletes, if this store holds
        one; it counts as released from now on (`restore` if the statement fails)."""
        owner = self._held.pop(conversation_pk, None)
        if owner is not None:
            self._released[conversation_pk] = owner
        return owner

    def restore(self, conversation_pk: int, owner: str) -> None:
        """The finishing statement failed: the lease row is still there."""
        self.taken(conversation_pk, owner)

    def release(self, conversation_pk: int, owner: str) -> bool:
        """Whether `release_lease` must still delete the row (False: the turn's commit did)."""
        self._held.pop(conversation_pk, None)
        return self._released.pop(conversation_pk, None) != owner
