"""Migration 2: a conversation's "head" (its first user message and first reply, hashed) lets a
client that resends whole histories without naming the conversation find it again.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    "ALTER TABLE conversations ADD COLUMN head_hash TEXT",
    "CREATE INDEX conversations_head ON conversations (agent_pk, head_hash)"
    " WHERE head_hash IS NOT NULL",
)

POSTGRES: tuple[str, ...] = (
    "ALTER TABLE conversations ADD COLUMN head_hash text",
    "CREATE INDEX conversations_head ON conversations (agent_pk, head_hash)"
    " WHERE head_hash IS NOT NULL",
)
