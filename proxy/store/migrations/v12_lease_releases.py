"""Migration 12: a conversation's lease row stays, and counts its releases (issue 19).

On Postgres a turn takes its conversation's lease in the same statement that loads the turn's
state (proxy/store/postgres/turns.py, `load_sql`): one round trip instead of two. A statement
reads one snapshot, taken when it starts; if another process's turn on the conversation
commits while this statement waits for that lease row, the state it read is older than the
lease it got. `releases` tells: every release (the finishing turn's statement, or
`release_lease`) now marks the row free (`owner` '', `expires_at` 0) and adds one instead of
deleting it, so a load compares the count in its snapshot with the count on the row it took
(ON CONFLICT ... DO UPDATE acts on the newest row version). They differ only when a release
committed after the snapshot; then the state is read again, under the lease.

A row per conversation that ever had a turn, as the conversation row itself; it goes with its
conversation (ON DELETE CASCADE). Updates of a row that change no indexed column are HOT, so
the row's dead versions are pruned from its page without VACUUM (autovacuum may be off).

SQLite's leases are OFD file locks on Linux, and its lease rows elsewhere are taken with a
separate write; its load reads the database as of the read, after the lease: no change.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()

POSTGRES: tuple[str, ...] = (
    "ALTER TABLE leases ADD COLUMN releases bigint NOT NULL DEFAULT 0",
)
