"""Migration 4: embedding vectors for hybrid search (docs/search.md).

Vectors are float32 blobs in `passage_vectors` / `message_vectors`; each row copies what a
search filters on (agent, and for messages role and created_at) and goes away with its passage
or message (ON DELETE CASCADE). `vector_state` counts rows and changes per agent and kind
("passage", "message"), kept by triggers (statement-level on Postgres), which also fire for
cascaded deletes. On Postgres, pgvector is enabled when the server offers it, adding an
`embedding vector` column to both tables (see store/postgres/vectors.py).

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    """CREATE TABLE passage_vectors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        passage_pk INTEGER NOT NULL UNIQUE REFERENCES passages(pk) ON DELETE CASCADE,
        agent_pk INTEGER NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        created_at REAL NOT NULL)""",
    "CREATE INDEX passage_vectors_agent ON passage_vectors (agent_pk, id)",
    """CREATE TABLE message_vectors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_pk INTEGER NOT NULL UNIQUE REFERENCES messages(pk) ON DELETE CASCADE,
        agent_pk INTEGER NOT NULL,
        role INTEGER NOT NULL,
        message_created_at REAL NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        created_at REAL NOT NULL)""",
    "CREATE INDEX message_vectors_agent ON message_vectors (agent_pk, id)",
    """CREATE TABLE vector_state (
        agent_pk INTEGER NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        rows INTEGER NOT NULL DEFAULT 0,
        changes INTEGER NOT NULL DEFAULT 0,
        removals INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (agent_pk, kind)) WITHOUT ROWID""",
    """CREATE TRIGGER passage_vectors_state_insert AFTER INSERT ON passage_vectors BEGIN
            INSERT INTO vector_state (agent_pk, kind, rows, changes) VALUES (new.agent_pk, 'passage', 1, 1)
            ON CONFLICT (agent_pk, kind) DO UPDATE SET rows = rows + 1, changes = changes + 1;
        END""",
    """CREATE TRIGGER passage_vectors_state_delete AFTER DELETE ON passage_vectors BEGIN
            UPDATE vector_state SET rows = rows - 1, changes = changes + 1, removals = removals + 1
            WHERE agent_pk = old.agent_pk AND kind = 'passage';
        END""",
    """CREATE TRIGGER message_vectors_state_insert AFTER INSERT ON message_vectors BEGIN
            INSERT INTO vector_state (agent_pk, kind, rows, changes) VALUES (new.agent_pk, 'message', 1, 1)
            ON CONFLICT (agent_pk, kind) DO UPDATE SET rows = rows + 1, changes = changes + 1;
        END""",
    """CREATE TRIGGER message_vectors_state_delete AFTER DELETE ON message_vectors BEGIN
            UPDATE vector_state SET rows = rows - 1, changes = changes + 1, removals = removals + 1
            WHERE agent_pk = old.agent_pk AND kind = 'message';
        END""",
)

POSTGRES: tuple[str, ...] = (
    """CREATE TABLE passage_vectors (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        passage_pk bigint NOT NULL UNIQUE REFERENCES passages(pk) ON DELETE CASCADE,
        agent_pk bigint NOT NULL,
        model text NOT NULL,
        dim integer NOT NULL,
        vector bytea NOT NULL,
        created_at double precision NOT NULL)""",
    "CREATE INDEX passage_vectors_agent ON passage_vectors (agent_pk, id)",
    """CREATE TABLE message_vectors (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_pk bigint NOT NULL UNIQUE REFERENCES messages(pk) ON DELETE CASCADE,
        agent_pk bigint NOT NULL,
        role smallint NOT NULL,
        message_created_at double precision NOT NULL,
        model text NOT NULL,
        dim integer NOT NULL,
        vector bytea NOT NULL,
        created_at double precision NOT NULL)""",
    "CREATE INDEX message_vectors_agent ON message_vectors (agent_pk, id)",
    # Random floats do not compress: skip the attempt (EXTERNAL = out of line, uncompressed).
    "ALTER TABLE passage_vectors ALTER COLUMN vector SET STORAGE EXTERNAL",
    "ALTER TABLE message_vectors ALTER COLUMN vector SET STORAGE EXTERNAL",
    """CREATE TABLE vector_state (
        agent_pk bigint NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        kind text NOT NULL,
        rows bigint NOT NULL DEFAULT 0,
        changes bigint NOT NULL DEFAULT 0,
        removals bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (agent_pk, kind))""",
    """CREATE FUNCTION memproxy_vector_state() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE v_kind text := TG_ARGV[0];
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO vector_state AS s (agent_pk, kind, rows, changes)
            SELECT agent_pk, v_kind, count(*), count(*) FROM new_rows GROUP BY agent_pk
            ON CONFLICT (agent_pk, kind) DO UPDATE
            SET rows = s.rows + excluded.rows, changes = s.changes + excluded.changes;
        ELSE
            UPDATE vector_state s SET rows = s.rows - d.n, changes = s.changes + d.n,
                removals = s.removals + d.n
            FROM (SELECT agent_pk, count(*) AS n FROM old_rows GROUP BY agent_pk) d
            WHERE s.agent_pk = d.agent_pk AND s.kind = v_kind;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER passage_vectors_state_insert AFTER INSERT ON passage_vectors
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION memproxy_vector_state('passage')""",
    """CREATE TRIGGER passage_vectors_state_delete AFTER DELETE ON passage_vectors
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION memproxy_vector_state('passage')""",
    """CREATE TRIGGER message_vectors_state_insert AFTER INSERT ON message_vectors
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION memproxy_vector_state('message')""",
    """CREATE TRIGGER message_vectors_state_delete AFTER DELETE ON message_vectors
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION memproxy_vector_state('message')""",
    # The PL/pgSQL block runs CREATE EXTENSION in a subtransaction: if it fails, the migration
    # goes on without pgvector. EXECUTE keeps the `vector` type out of the parsed statement.
    """DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS vector;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'pgvector is available but could not be enabled: %', SQLERRM;
            END;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
            EXECUTE 'ALTER TABLE passage_vectors ADD COLUMN embedding vector';
            EXECUTE 'ALTER TABLE message_vectors ADD COLUMN embedding vector';
        END IF;
    END $$""",
)
