"""Migration 5: everything a turn reads costs the same whatever the agent's history.

- The conversation epoch (store/known_context.py): bumped by every delete of a conversation
  row, whoever deletes, it invalidates the contexts each process keeps decoded.
- agents.passage_count (archival passages, shown in every prompt's memory metadata) is kept by
  triggers like recall_count, instead of a count(*) per turn (~2-5 ms at 100k passages).
- SQLite indexes messages for full-text search in batches, off the turn's commit
  (store/sqlite/fts.py). `fts_progress.upto`: every message with pk <= upto is in the index,
  none above it is. The triggers keep that true: a delete or text update touches the index
  only for rows at or below upto, and a row inserted at or below upto (SQLite reuses the
  largest pks after a delete) is indexed at once.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    # the conversation epoch
    "CREATE TABLE conversation_epoch ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "INSERT INTO conversation_epoch (id, value) VALUES (1, 0)",
    "CREATE TRIGGER conversations_epoch AFTER DELETE ON conversations BEGIN"
    " UPDATE conversation_epoch SET value = value + 1 WHERE id = 1; END",
    # agents.passage_count
    "ALTER TABLE agents ADD COLUMN passage_count INTEGER NOT NULL DEFAULT 0",
    "UPDATE agents SET passage_count = (SELECT count(*) FROM passages p"
    " WHERE p.agent_pk = agents.pk)",
    """CREATE TRIGGER passages_count_insert AFTER INSERT ON passages BEGIN
        UPDATE agents SET passage_count = passage_count + 1 WHERE pk = new.agent_pk;
    END""",
    """CREATE TRIGGER passages_count_delete AFTER DELETE ON passages BEGIN
        UPDATE agents SET passage_count = passage_count - 1 WHERE pk = old.agent_pk;
    END""",
    # full-text indexing in batches
    "CREATE TABLE fts_progress (name TEXT PRIMARY KEY, upto INTEGER NOT NULL)",
    "INSERT INTO fts_progress (name, upto) SELECT 'messages', coalesce(max(pk), 0)"
    " FROM messages",
    "DROP TRIGGER messages_fts_delete",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.pk <= (SELECT upto FROM fts_progress WHERE name = 'messages') BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
    END""",
    "DROP TRIGGER messages_fts_update",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, agent_pk ON messages
        WHEN old.pk <= (SELECT upto FROM fts_progress WHERE name = 'messages') BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
        INSERT INTO messages_fts (rowid, text, fts_scope)
        VALUES (new.pk, new.text, 'a' || new.agent_pk);
    END""",
    """CREATE TRIGGER messages_fts_reused AFTER INSERT ON messages
        WHEN new.pk <= (SELECT upto FROM fts_progress WHERE name = 'messages') BEGIN
        INSERT INTO messages_fts (rowid, text, fts_scope)
        VALUES (new.pk, new.text, 'a' || new.agent_pk);
    END""",
)

POSTGRES: tuple[str, ...] = (
    # the conversation epoch
    "CREATE TABLE conversation_epoch ("
    " id integer PRIMARY KEY CHECK (id = 1), value bigint NOT NULL)",
    "INSERT INTO conversation_epoch (id, value) VALUES (1, 0)",
    "CREATE FUNCTION bump_conversation_epoch() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN UPDATE conversation_epoch SET value = value + 1 WHERE id = 1; RETURN NULL; END $$",
    "CREATE TRIGGER conversations_epoch AFTER DELETE ON conversations"
    " FOR EACH STATEMENT EXECUTE FUNCTION bump_conversation_epoch()",
    # agents.passage_count
    "ALTER TABLE agents ADD COLUMN passage_count bigint NOT NULL DEFAULT 0",
    "UPDATE agents a SET passage_count = (SELECT count(*) FROM passages p"
    " WHERE p.agent_pk = a.pk)",
    """CREATE FUNCTION memproxy_passages_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET passage_count = a.passage_count + d.n
        FROM (SELECT agent_pk, count(*) AS n FROM new_rows GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION memproxy_passages_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET passage_count = a.passage_count - d.n
        FROM (SELECT agent_pk, count(*) AS n FROM old_rows GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER passages_count_insert AFTER INSERT ON passages
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memproxy_passages_insert()""",
    """CREATE TRIGGER passages_count_delete AFTER DELETE ON passages
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memproxy_passages_delete()""",
)
