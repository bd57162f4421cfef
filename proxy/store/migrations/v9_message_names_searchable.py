"""Migration 9: full-text search also matches a message's `name` (OpenAI's speaker name).

A chat message may carry `"name": "Caroline"` (the participant who spoke) while its content
never repeats it; people ask "what did Caroline say about ...". Until now only the text was
indexed. The name stays inside the stored message JSON (`data`), nothing is copied:

- SQLite: a VIRTUAL generated column `fts_name` (no storage; computed when the index reads
  it), and `messages_fts` rebuilt with a third column `fts_name` next to `text` and
  `fts_scope`. Only rows whose JSON contains `"name"` are parsed. The triggers of migration 5
  are re-created with the new column (and a change of `data` re-indexes the row); the rows
  already indexed (pk <= fts_progress.upto) are indexed again here, the others by the next
  batch as before.
- Postgres: `memproxy_message_name(data)` (NULL unless the JSON is an object with a `name`;
  a document holding a `\\u0000` escape is skipped, because `->>` would raise on it and fail
  the insert) and the stored `tsv` column re-created with the name's lexemes appended; that
  rewrites the table and rebuilds `messages_tsv` (docs/storage.md, migration notes).

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

_FTS_TOKENIZER = "tokenize='porter unicode61 remove_diacritics 2'"
_UPTO = "(SELECT upto FROM fts_progress WHERE name = 'messages')"

SQLITE: tuple[str, ...] = (
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_update",
    "DROP TRIGGER messages_fts_reused",
    "DROP TABLE messages_fts",
    """ALTER TABLE messages ADD COLUMN fts_name TEXT GENERATED ALWAYS AS
        (CASE WHEN instr(data, '"name"') = 0 THEN NULL
              WHEN json_valid(data) AND json_type(data, '$.name') = 'text'
              THEN substr(json_extract(data, '$.name'), 1, 1000) END) VIRTUAL""",
    f"""CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, fts_scope, fts_name, content='messages', content_rowid='pk', {_FTS_TOKENIZER})""",
    f"""CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.pk <= {_UPTO} BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope, fts_name)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk, old.fts_name);
    END""",
    f"""CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, agent_pk, data ON messages
        WHEN old.pk <= {_UPTO} BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope, fts_name)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk, old.fts_name);
        INSERT INTO messages_fts (rowid, text, fts_scope, fts_name)
        VALUES (new.pk, new.text, 'a' || new.agent_pk, new.fts_name);
    END""",
    f"""CREATE TRIGGER messages_fts_reused AFTER INSERT ON messages
        WHEN new.pk <= {_UPTO} BEGIN
        INSERT INTO messages_fts (rowid, text, fts_scope, fts_name)
        VALUES (new.pk, new.text, 'a' || new.agent_pk, new.fts_name);
    END""",
    f"""INSERT INTO messages_fts (rowid, text, fts_scope, fts_name)
        SELECT pk, text, fts_scope, fts_name FROM messages WHERE pk <= {_UPTO}""",
)

POSTGRES: tuple[str, ...] = (
    r"""CREATE FUNCTION memproxy_message_name(data json) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN strpos(data::text, '"name"') > 0
                     AND strpos(data::text, E'\\u0000') = 0
                     AND json_typeof(data) = 'object'
                     AND json_typeof(data -> 'name') = 'string'
                THEN left(data ->> 'name', 1000) END $$""",
    "ALTER TABLE messages DROP COLUMN tsv",
    """ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS
        (CASE WHEN visible
            THEN to_tsvector({fts_config}, memproxy_fold(left(text, 100000)))
                || coalesce(to_tsvector({fts_config},
                                        memproxy_fold(memproxy_message_name(data))), '')
                || memproxy_scope(agent_pk) END) STORED""",
    """CREATE INDEX messages_tsv ON messages USING gin (tsv) WITH (fastupdate = off)
        WHERE visible AND NOT superseded""",
)
