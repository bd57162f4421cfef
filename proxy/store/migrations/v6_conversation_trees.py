"""Migration 6: conversations are trees (core/tree.py, docs/conversation-tree.md).

- `messages.parent_seq`: the message a row follows (0: the root); `messages.path_hash`: names
  the path from the root to it, so a resent history is located with one indexed lookup
  (`messages_path`), and a run of recent messages by their visible hashes (`messages_anchor`).
- `messages.summary`: set on the last row a summary covers, so that a branch that leaves the
  path before that row gets the summary of its own path (`messages_summaries`).
- `turns.parent_seq`: the message a turn's steps and reply follow.
- `tree_backfill`: the conversations stored before this migration. Their trees are built once
  by the store when it opens (store/tree_backfill.py; hashing is not SQL), a batch of
  conversations per transaction, each removed from the table when done, so an interrupted backfill
  goes on at the next start.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    "ALTER TABLE messages ADD COLUMN parent_seq INTEGER",
    "ALTER TABLE messages ADD COLUMN path_hash TEXT",
    "ALTER TABLE messages ADD COLUMN summary TEXT",
    "ALTER TABLE turns ADD COLUMN parent_seq INTEGER",
    "CREATE INDEX messages_path ON messages (agent_pk, path_hash) WHERE visible = 1",
    "CREATE INDEX messages_anchor ON messages (agent_pk, visible_hash) WHERE visible = 1",
    "CREATE INDEX messages_summaries ON messages (conversation_pk, seq)"
    " WHERE summary IS NOT NULL",
    "CREATE TABLE tree_backfill (conversation_pk INTEGER PRIMARY KEY)",
    "INSERT INTO tree_backfill (conversation_pk) SELECT DISTINCT conversation_pk FROM messages",
)

POSTGRES: tuple[str, ...] = (
    "ALTER TABLE messages ADD COLUMN parent_seq integer",
    "ALTER TABLE messages ADD COLUMN path_hash text",
    "ALTER TABLE messages ADD COLUMN summary text",
    "ALTER TABLE turns ADD COLUMN parent_seq integer",
    "CREATE INDEX messages_path ON messages (agent_pk, path_hash) WHERE visible",
    "CREATE INDEX messages_anchor ON messages (agent_pk, visible_hash) WHERE visible",
    "CREATE INDEX messages_summaries ON messages (conversation_pk, seq)"
    " WHERE summary IS NOT NULL",
    "CREATE TABLE tree_backfill (conversation_pk bigint PRIMARY KEY)",
    "INSERT INTO tree_backfill (conversation_pk) SELECT DISTINCT conversation_pk FROM messages",
)
