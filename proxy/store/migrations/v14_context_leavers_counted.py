"""Migration 14: each conversation counts the messages that left its context (issue 19).

A turn hands the store the context it loaded last time (store/known_context.py). To know
whether rows left that context since (a page-out, a regenerate, a discarded turn), the
Postgres read counted the known rows still in context on every turn: a scan of the whole
context, ~0.5 ms a turn at ~700 messages. `conversations.left_context` makes that check one
comparison: the statement triggers that already keep `agents.recall_count` on UPDATE and
DELETE of messages now also add, per conversation, the rows that were in context (in context
and not superseded) and no longer are. They run for every writer of any release: a page-out,
a supersede, a discarded turn, plain SQL. The read compares the count with the one the known
context was loaded with; equal, no row was taken out and none is read.

Rows never come back into a context except by moving the active path to another branch, and
that bumps the conversation epoch (v5), which invalidates every known context anyway.

The UPDATE of `conversations` changes no indexed column, so it is HOT: its dead versions are
pruned without VACUUM. SQLite counts the known rows in the read, as before: there the count is
cheap.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()

POSTGRES: tuple[str, ...] = (
    "ALTER TABLE conversations ADD COLUMN left_context bigint NOT NULL DEFAULT 0",
    # migration 1's function, plus the rows that left their conversation's context
    """CREATE OR REPLACE FUNCTION memproxy_recall_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count + d.n
        FROM (SELECT agent_pk, sum(delta) AS n FROM (
                SELECT agent_pk, 1 AS delta FROM new_rows WHERE visible AND NOT superseded
                UNION ALL
                SELECT agent_pk, -1 FROM old_rows WHERE visible AND NOT superseded) x
              GROUP BY agent_pk HAVING sum(delta) <> 0) d
        WHERE a.pk = d.agent_pk;
        UPDATE conversations c SET left_context = c.left_context + d.n
        FROM (SELECT o.conversation_pk, count(*) AS n
              FROM old_rows o JOIN new_rows r ON r.pk = o.pk
              WHERE o.in_context AND NOT o.superseded AND NOT (r.in_context AND NOT r.superseded)
              GROUP BY o.conversation_pk) d
        WHERE c.pk = d.conversation_pk;
        RETURN NULL;
    END $$""",
    # migration 1's function, plus the deleted rows that were in their conversation's context
    """CREATE OR REPLACE FUNCTION memproxy_recall_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count - d.n
        FROM (SELECT agent_pk, count(*) AS n FROM old_rows
              WHERE visible AND NOT superseded GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        UPDATE conversations c SET left_context = c.left_context + d.n
        FROM (SELECT conversation_pk, count(*) AS n FROM old_rows
              WHERE in_context AND NOT superseded GROUP BY conversation_pk) d
        WHERE c.pk = d.conversation_pk;
        RETURN NULL;
    END $$""",
)
