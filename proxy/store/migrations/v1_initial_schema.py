"""Migration 1, the initial schema: agents, blocks, conversations, messages, passages (with
full-text search), turns, leases, API keys and model statistics.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

# `fts_scope` is a virtual generated column ('a' || agent_pk) indexed by FTS5 next to the text.
# A search matches `fts_scope:"a<pk>" AND text:(...)`, so FTS5 only walks the posting lists of
# that agent's rows instead of every tenant's matches. It costs no storage in the base table.
_FTS_TOKENIZER = "tokenize='porter unicode61 remove_diacritics 2'"

SQLITE: tuple[str, ...] = (
    """CREATE TABLE agents (
        pk INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        recall_count INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant, agent_id))""",
    """CREATE TABLE blocks (
        agent_pk INTEGER NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        label TEXT NOT NULL,
        value TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        lim INTEGER NOT NULL DEFAULT 5000,
        read_only INTEGER NOT NULL DEFAULT 0,
        updated_at REAL,
        PRIMARY KEY (agent_pk, label))""",
    """CREATE TABLE conversations (
        pk INTEGER PRIMARY KEY,
        agent_pk INTEGER NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        conversation_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        resends_history INTEGER,
        UNIQUE (agent_pk, conversation_id))""",
    # agent_pk is denormalised (no FK: conversations cascade already deletes the rows) so that
    # recall search and counts per agent never join through conversations.
    """CREATE TABLE messages (
        pk INTEGER PRIMARY KEY,
        conversation_pk INTEGER NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE,
        agent_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        turn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        data TEXT NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        in_context INTEGER NOT NULL DEFAULT 1,
        visible INTEGER NOT NULL DEFAULT 1,
        superseded INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER,
        visible_hash TEXT,
        fts_scope TEXT GENERATED ALWAYS AS ('a' || agent_pk) VIRTUAL,
        UNIQUE (conversation_pk, seq))""",
    # Partial indexes: the context window and the visible transcript of a conversation with
    # 100k messages are read without touching the evicted / internal / superseded rows.
    """CREATE INDEX messages_context ON messages (conversation_pk, seq)
        WHERE in_context = 1 AND superseded = 0""",
    """CREATE INDEX messages_visible ON messages (conversation_pk, seq)
        WHERE visible = 1 AND superseded = 0""",
    # Recall memory per agent, newest first (searches with a blank query).
    """CREATE INDEX messages_agent_recall ON messages (agent_pk, created_at)
        WHERE visible = 1 AND superseded = 0""",
    # agents.recall_count = the agent's visible, non-superseded messages, kept by triggers so
    # that count_messages (in every prompt's memory metadata) is O(1) instead of an index
    # walk (~7 ms at 100k messages). A plain-table update per row costs ~1 us.
    """CREATE TRIGGER messages_count_insert AFTER INSERT ON messages
        WHEN new.visible = 1 AND new.superseded = 0 BEGIN
        UPDATE agents SET recall_count = recall_count + 1 WHERE pk = new.agent_pk;
    END""",
    """CREATE TRIGGER messages_count_update AFTER UPDATE OF visible, superseded ON messages
        WHEN (old.visible = 1 AND old.superseded = 0) != (new.visible = 1 AND new.superseded = 0)
    BEGIN
        UPDATE agents SET recall_count = recall_count
            + CASE WHEN new.visible = 1 AND new.superseded = 0 THEN 1 ELSE -1 END
        WHERE pk = new.agent_pk;
    END""",
    """CREATE TRIGGER messages_count_delete AFTER DELETE ON messages
        WHEN old.visible = 1 AND old.superseded = 0 BEGIN
        UPDATE agents SET recall_count = recall_count - 1 WHERE pk = old.agent_pk;
    END""",
    # No AFTER INSERT trigger on messages: FTS5 flushes its pending terms at every statement
    # savepoint, so a per-row trigger costs ~20-35 us a row (a new segment each time) where one
    # INSERT INTO messages_fts ... SELECT per batch, issued by the store in the same
    # transaction, costs ~2 us. Deletes (cascades included) and text updates use triggers.
    f"""CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, fts_scope, content='messages', content_rowid='pk', {_FTS_TOKENIZER})""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, agent_pk ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
        INSERT INTO messages_fts (rowid, text, fts_scope)
        VALUES (new.pk, new.text, 'a' || new.agent_pk);
    END""",
    """CREATE TABLE passages (
        pk INTEGER PRIMARY KEY,
        agent_pk INTEGER NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        text TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        fts_scope TEXT GENERATED ALWAYS AS ('a' || agent_pk) VIRTUAL)""",
    "CREATE INDEX passages_agent ON passages (agent_pk, pk)",
    f"""CREATE VIRTUAL TABLE passages_fts USING fts5(
        text, fts_scope, content='passages', content_rowid='pk', {_FTS_TOKENIZER})""",
    """CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts (rowid, text, fts_scope)
        VALUES (new.pk, new.text, 'a' || new.agent_pk);
    END""",
    """CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts (passages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
    END""",
    """CREATE TRIGGER passages_fts_update AFTER UPDATE OF text, agent_pk ON passages BEGIN
        INSERT INTO passages_fts (passages_fts, rowid, text, fts_scope)
        VALUES ('delete', old.pk, old.text, 'a' || old.agent_pk);
        INSERT INTO passages_fts (rowid, text, fts_scope)
        VALUES (new.pk, new.text, 'a' || new.agent_pk);
    END""",
    # "Newest" turn = highest rowid (rowids only grow), which every index below ends with.
    """CREATE TABLE turns (
        turn_id TEXT PRIMARY KEY,
        conversation_pk INTEGER NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ('open', 'done', 'failed')),
        request_hash TEXT NOT NULL,
        idempotency_key TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        response TEXT,
        error TEXT,
        first_seq INTEGER)""",
    "CREATE INDEX turns_conversation ON turns (conversation_pk)",
    "CREATE INDEX turns_request_hash ON turns (conversation_pk, request_hash)",
    """CREATE INDEX turns_idempotency ON turns (conversation_pk, idempotency_key)
        WHERE idempotency_key IS NOT NULL""",
    """CREATE TABLE leases (
        conversation_pk INTEGER PRIMARY KEY REFERENCES conversations(pk) ON DELETE CASCADE,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL)""",
    """CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE model_stats (
        model TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL)""",
)

# Postgres. Differences from SQLite, on purpose:
# - Full-text search is a STORED generated tsvector column with a GIN index (no FTS tables, no
#   triggers to keep them in sync). The text-search configuration (english, simple, ...) is
#   chosen when the database is created: `{fts_config}` below is replaced by it (a quoted
#   literal) and it is recorded in `store_settings`, which later migrations and the store read.
#   Only the first 100k characters are indexed (a tsvector is limited to 1 MB), and a message's
#   vector is computed only while it is visible to search (internal steps never are).
# - memproxy_fold() removes diacritics before indexing and before querying ("cafe" finds
#   "café", like FTS5's remove_diacritics), with no extension needed (normalize() is core).
# - agents.recall_count is kept by STATEMENT-level triggers over transition tables: one UPDATE
#   of the agent row per statement, not one per message row (a 100k-message batch would
#   otherwise leave 100k versions of that row).
# - Opaque payloads (message data, a turn's response and error) are `json`, stored verbatim:
#   key order survives (replayed responses and re-sent prompts stay byte-identical) and a
#   \u0000 escape is accepted, which jsonb rejects. Queried JSON (tags, settings) is jsonb.
# - "Newest" turn and block order use identity columns (`ord`, `pos`) instead of rowid.
POSTGRES: tuple[str, ...] = (
    """CREATE TABLE store_settings (
        key text PRIMARY KEY,
        value text NOT NULL)""",
    "INSERT INTO store_settings (key, value) VALUES ('fts_config', {fts_config})",
    # Not STRICT, so that the planner can inline it. ASCII text (the common case) is returned
    # as is; otherwise NFD, combining marks (U+0300-U+036F) dropped, NFC again.
    r"""CREATE FUNCTION memproxy_fold(t text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN octet_length(t) = char_length(t) THEN t
            ELSE normalize(regexp_replace(normalize(t, NFD), '[\u0300-\u036f]+', '', 'g'), NFC)
        END $$""",
    # The agent scope as a lexeme (" a<pk>": no parser ever makes a lexeme with a space), added
    # to every row's vector and AND-ed to every query, like FTS5's fts_scope: the GIN index
    # itself restricts a search to one agent, starting from whichever side is rarer, instead
    # of finding every tenant's matches and filtering them on the heap.
    """CREATE FUNCTION memproxy_scope(agent_pk bigint) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT array_to_tsvector(ARRAY[' a' || agent_pk::text]) $$""",
    """CREATE FUNCTION memproxy_scope_query(agent_pk bigint) RETURNS tsquery
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT ('''' || ' a' || agent_pk::text || '''')::tsquery $$""",
    """CREATE TABLE agents (
        pk bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        tenant text NOT NULL,
        agent_id text NOT NULL,
        created_at double precision NOT NULL,
        settings jsonb NOT NULL DEFAULT '{}',
        recall_count bigint NOT NULL DEFAULT 0,
        UNIQUE (tenant, agent_id))""",
    """CREATE TABLE blocks (
        agent_pk bigint NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        label text NOT NULL,
        value text NOT NULL DEFAULT '',
        description text NOT NULL DEFAULT '',
        lim integer NOT NULL DEFAULT 5000,
        read_only boolean NOT NULL DEFAULT false,
        updated_at double precision,
        pos bigint GENERATED BY DEFAULT AS IDENTITY,
        PRIMARY KEY (agent_pk, label))""",
    """CREATE TABLE conversations (
        pk bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        agent_pk bigint NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        conversation_id text NOT NULL,
        created_at double precision NOT NULL,
        summary text NOT NULL DEFAULT '',
        resends_history boolean,
        UNIQUE (agent_pk, conversation_id))""",
    """CREATE TABLE messages (
        pk bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        conversation_pk bigint NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE,
        agent_pk bigint NOT NULL,
        seq integer NOT NULL,
        turn_id text NOT NULL,
        role text NOT NULL,
        data json NOT NULL,
        text text NOT NULL DEFAULT '',
        created_at double precision NOT NULL,
        in_context boolean NOT NULL DEFAULT true,
        visible boolean NOT NULL DEFAULT true,
        superseded boolean NOT NULL DEFAULT false,
        tokens integer,
        visible_hash text,
        tsv tsvector GENERATED ALWAYS AS
            (CASE WHEN visible
                THEN to_tsvector({fts_config}, memproxy_fold(left(text, 100000)))
                    || memproxy_scope(agent_pk) END) STORED,
        UNIQUE (conversation_pk, seq))""",
    """CREATE INDEX messages_context ON messages (conversation_pk, seq)
        WHERE in_context AND NOT superseded""",
    """CREATE INDEX messages_visible ON messages (conversation_pk, seq)
        WHERE visible AND NOT superseded""",
    """CREATE INDEX messages_agent_recall ON messages (agent_pk, created_at)
        WHERE visible AND NOT superseded""",
    # fastupdate off: no pending list that every search must scan linearly (and that the
    # planner prices so high it prefers a sequential scan) and no flush spikes on a turn's
    # commit; a turn adds a few rows, which the index absorbs directly at about the same cost.
    """CREATE INDEX messages_tsv ON messages USING gin (tsv) WITH (fastupdate = off)
        WHERE visible AND NOT superseded""",
    """CREATE FUNCTION memproxy_recall_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count + d.n
        FROM (SELECT agent_pk, count(*) AS n FROM new_rows
              WHERE visible AND NOT superseded GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION memproxy_recall_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count + d.n
        FROM (SELECT agent_pk, sum(delta) AS n FROM (
                SELECT agent_pk, 1 AS delta FROM new_rows WHERE visible AND NOT superseded
                UNION ALL
                SELECT agent_pk, -1 FROM old_rows WHERE visible AND NOT superseded) x
              GROUP BY agent_pk HAVING sum(delta) <> 0) d
        WHERE a.pk = d.agent_pk;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION memproxy_recall_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count - d.n
        FROM (SELECT agent_pk, count(*) AS n FROM old_rows
              WHERE visible AND NOT superseded GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER messages_count_insert AFTER INSERT ON messages
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memproxy_recall_insert()""",
    """CREATE TRIGGER messages_count_update AFTER UPDATE ON messages
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memproxy_recall_update()""",
    """CREATE TRIGGER messages_count_delete AFTER DELETE ON messages
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memproxy_recall_delete()""",
    """CREATE TABLE passages (
        pk bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        agent_pk bigint NOT NULL REFERENCES agents(pk) ON DELETE CASCADE,
        text text NOT NULL,
        tags jsonb NOT NULL DEFAULT '[]',
        created_at double precision NOT NULL,
        tsv tsvector GENERATED ALWAYS AS
            (to_tsvector({fts_config}, memproxy_fold(left(text, 100000)))
                || memproxy_scope(agent_pk)) STORED)""",
    "CREATE INDEX passages_agent ON passages (agent_pk, pk)",
    "CREATE INDEX passages_tsv ON passages USING gin (tsv) WITH (fastupdate = off)",
    """CREATE TABLE turns (
        turn_id text PRIMARY KEY,
        conversation_pk bigint NOT NULL REFERENCES conversations(pk) ON DELETE CASCADE,
        ord bigint GENERATED ALWAYS AS IDENTITY,
        status text NOT NULL CHECK (status IN ('open', 'done', 'failed')),
        request_hash text NOT NULL,
        idempotency_key text,
        created_at double precision NOT NULL,
        finished_at double precision,
        response json,
        error json,
        first_seq integer)""",
    "CREATE INDEX turns_conversation ON turns (conversation_pk, ord)",
    "CREATE INDEX turns_request_hash ON turns (conversation_pk, request_hash, ord)",
    """CREATE INDEX turns_idempotency ON turns (conversation_pk, idempotency_key, ord)
        WHERE idempotency_key IS NOT NULL""",
    """CREATE TABLE leases (
        conversation_pk bigint PRIMARY KEY REFERENCES conversations(pk) ON DELETE CASCADE,
        owner text NOT NULL,
        expires_at double precision NOT NULL)""",
    """CREATE TABLE api_keys (
        key_hash text PRIMARY KEY,
        tenant text NOT NULL,
        created_at double precision NOT NULL)""",
    """CREATE TABLE model_stats (
        model text PRIMARY KEY,
        data jsonb NOT NULL,
        updated_at double precision NOT NULL)""",
)

