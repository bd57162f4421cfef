"""Migration 13: a message's tsvector is filled by a row trigger, not a generated column
(issue 19).

A STORED generated column costs every INSERT or UPDATE statement on its table a planning step
at executor start-up, whether or not the statement touches the column's inputs: Postgres
prepares the generation expression anew for each statement, and in doing so inlines the SQL
functions in it (`memproxy_fold`, `memproxy_message_name`, `memproxy_scope`), parsing their
bodies every time. A turn runs three such statements on `messages` (its inputs, its reply,
and the supersede that moves the active path on), and the messages of a long chat are paged
out by more. Measured on this schema, each insert of one row in its own transaction (as a
turn's statements are), over the same insert into a plain column: +150-210 µs with the
generated column, +70 µs with this trigger. The trigger spells its expression out with
built-in functions: a plpgsql expression is planned once per session, while a SQL function
that is not inlined (`memproxy_fold` uses its argument twice) is parsed and planned again in
every transaction (a first version of this trigger that called the three functions saved
only ~30 µs).

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
    # memproxy_fold, memproxy_message_name and memproxy_scope, spelled out with built-in
    # functions (module docstring).
    r"""CREATE FUNCTION memproxy_message_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        body text;
        raw text;
        name text;
        doc tsvector;
    BEGIN
        IF NOT NEW.visible THEN
            NEW.tsv := NULL;
            RETURN NEW;
        END IF;
        body := left(NEW.text, 100000);
        IF octet_length(body) <> char_length(body) THEN
            body := normalize(regexp_replace(normalize(body, NFD), '[\u0300-\u036f]+', '', 'g'),
                              NFC);
        END IF;
        doc := to_tsvector({fts_config}, body);
        raw := NEW.data::text;
        IF strpos(raw, '"name"') > 0 AND strpos(raw, E'\\u0000') = 0
                AND json_typeof(NEW.data) = 'object'
                AND json_typeof(NEW.data -> 'name') = 'string' THEN
            name := left(NEW.data ->> 'name', 1000);
            IF octet_length(name) <> char_length(name) THEN
                name := normalize(regexp_replace(normalize(name, NFD), '[\u0300-\u036f]+', '',
                                                 'g'), NFC);
            END IF;
            doc := doc || to_tsvector({fts_config}, name);
        END IF;
        NEW.tsv := doc || array_to_tsvector(ARRAY[' a' || NEW.agent_pk::text]);
        RETURN NEW;
    END $$""",
    "ALTER TABLE messages ALTER COLUMN tsv DROP EXPRESSION",
    """CREATE TRIGGER messages_tsv BEFORE INSERT OR UPDATE OF text, data, visible, agent_pk
        ON messages FOR EACH ROW EXECUTE FUNCTION memproxy_message_tsv()""",
)
