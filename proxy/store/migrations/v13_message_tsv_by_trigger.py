"""Migration 13: a message's tsvector is filled by a row trigger, not a generated column
(issue 19).

A STORED generated column costs every INSERT or UPDATE statement on its table a planning step
at executor start-up, whether or not the statement touches the column's inputs: Postgres
prepares the generation expression anew for each statement, and in doing so inlines the SQL
functions in it (`memproxy_fold`, `memproxy_message_name`, `memproxy_scope`), parsing their
bodies every time. A turn runs three such statements on `messages` (its inputs, its reply,
and the supersede that moves the active path on), and the messages of a long chat are paged
out by more. Measured on this schema, one-row inserts cost ~100 µs with the generated column
against ~20 µs with a row trigger computing the same value (~7 µs with none), and an update of
another column 13 µs against 7 µs: a plpgsql trigger keeps its expression's plan for the
session, so it pays only for the row.

The column keeps its values (DROP EXPRESSION rewrites nothing) and its index; the trigger
computes exactly what the generation expression did (same configuration, same functions), on
INSERT and on an UPDATE that sets `text`, `data` or `visible` (forgetting a message does), so
every writer, including a process of an older release during an upgrade, stays searchable.
Updates of other columns (paging out, superseding, tree moves, summaries) no longer recompute
it at all.

Passages keep their generated column: they are written rarely, not on every turn.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()  # FTS5 tables, kept by triggers already (v1, v9)

POSTGRES: tuple[str, ...] = (
    """CREATE FUNCTION memproxy_message_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.tsv := CASE WHEN NEW.visible
            THEN to_tsvector({fts_config}, memproxy_fold(left(NEW.text, 100000)))
                || coalesce(to_tsvector({fts_config},
                                        memproxy_fold(memproxy_message_name(NEW.data))), '')
                || memproxy_scope(NEW.agent_pk) END;
        RETURN NEW;
    END $$""",
    "ALTER TABLE messages ALTER COLUMN tsv DROP EXPRESSION",
    """CREATE TRIGGER messages_tsv BEFORE INSERT OR UPDATE OF text, data, visible, agent_pk
        ON messages FOR EACH ROW EXECUTE FUNCTION memproxy_message_tsv()""",
)
