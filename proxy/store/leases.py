"""Conversation leases between processes: the protocol `turn/locks.py` holds them through,
and the file-lock implementation the SQLite store hands out on Linux.

Postgres (and SQLite where the OS lacks OFD locks) keep lease rows instead; see the
`turn_leases()` of each store and `docs/storage.md`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from typing import Protocol


class LeaseStore(Protocol):
    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool: ...

    async def release_lease(self, conversation_pk: int, owner: str) -> None: ...


@dataclass(frozen=True)
class LeaseClaim:
    """A lease to take in the same round trip as the turn's first read, where the lease store
    can (`leases_in_read = True` on it: Postgres, whose lease is a row written by the read's
    own statement). The read raises LeaseBusy while another owner holds the lease."""

    owner: str
    ttl_s: float


class LeaseBusy(Exception):
    """Another owner holds the conversation's live lease: nothing was read; try again."""


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)  # Linux >= 3.15
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux: type, whence, start, len, pid


class FileLeases:
    """Leases as open-file-description locks: byte `conversation_pk` of `path`, exclusive.

    An OFD lock belongs to the open file, not to the process, so each instance (it opens the
    file once) excludes every other instance — in another process or in this one — and the
    kernel releases the instance's locks when its file is closed or its process dies. Nothing
    expires, so nothing needs renewing (`expires = False`); `owner` and `ttl_s` are ignored.
    """

    expires = False

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def supported() -> bool:
        return _OFD_SETLK is not None

    def _lock(self, conversation_pk: int, kind: int) -> bool:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        request = _FLOCK.pack(kind, os.SEEK_SET, conversation_pk, 1, 0)
        try:
            fcntl.fcntl(self._fd, _OFD_SETLK, request)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        return self._lock(conversation_pk, fcntl.F_WRLCK)

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        self._lock(conversation_pk, fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the file, which releases every lock this instance holds."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
