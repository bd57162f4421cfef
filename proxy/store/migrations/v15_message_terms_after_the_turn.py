"""Migration 15: a message's search vector is written after its turn, in a table of its own
(issue 19, item 4: what a turn does that the answer does not need leaves the request path).

Until now every statement that stored a message also computed its tsvector (migration 13's
row trigger) and inserted it into the GIN index. That is the largest part of a turn's own
writes that the answer never reads: measured on this schema, one message stored in its own
statement, 0.45-0.49 ms with its vector against 0.35-0.42 ms without (30 words), 0.70-0.84
against 0.41-0.44 ms (300 words, a usual assistant reply). Filling `messages.tsv` later would
be an UPDATE that is not HOT (the GIN index covers the column): every message written twice,
with new entries in every index of `messages` (two processes then served 263 turns/s against
336). So the vectors move to their own table, inserted once, in the background:

- `message_terms (message_pk, agent_pk, tsv)`: the vector of every visible message that has
  been indexed, with the GIN index the searches use, and an index of each agent's vectors
  newest first (automatic recall reads the newest matches). A message's row goes with it
  (ON DELETE CASCADE).
- `message_terms_pending (agent_pk, message_pk)`: the visible messages not indexed yet. The
  insert statement trigger that already counts an agent's searchable messages adds them (no
  trigger more on a turn's statements; one short row in a B-tree instead of a vector in a GIN
  index). A change of a message's text, data, visibility or agent (forgetting one does)
  drops its vector at once and queues it again (`messages_terms_stale`).
- The store's background indexer (proxy/store/postgres/message_terms.py) moves batches from
  the queue to `message_terms` (`memproxy_index_message_terms`, one round trip a batch); any
  process does, so rows queued by a process that died are
  indexed by the others. Searches see the queued rows too: their vectors are computed while
  searching, with `memproxy_message_vector`, the same function the indexer uses, and a row
  both queued and indexed counts as queued (its vector is being replaced). A search finds
  the same rows with the same scores before and after the indexer's pass.

The update statement trigger that keeps the recall and context counts (migration 14's
function) now returns at once when its statement updated no row, as a turn's supersede almost
never does: it ran two UPDATE statements over empty transition tables on every turn.

`memproxy_message_vector` is migration 13's trigger body as a function (the configuration's
tsvector of the first 100k characters, diacritics removed, the JSON's string `name`, the
agent's scope lexeme). The existing vectors are copied as they are; the column and its index
are dropped (no rewrite of `messages`). SQLite is unchanged: FTS5 indexes its rows in the
writing transaction, at a fraction of this cost.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()

POSTGRES: tuple[str, ...] = (
    # migration 13's trigger body, as a function of the message's agent, text and data
    r"""CREATE FUNCTION memproxy_message_vector(agent_pk bigint, message_text text, data json)
    RETURNS tsvector LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
    DECLARE
        body text;
        raw text;
        name text;
        doc tsvector;
    BEGIN
        body := left(message_text, 100000);
        IF octet_length(body) <> char_length(body) THEN
            body := normalize(regexp_replace(normalize(body, NFD), '[\u0300-\u036f]+', '', 'g'),
                              NFC);
        END IF;
        doc := to_tsvector({fts_config}, body);
        raw := data::text;
        IF strpos(raw, '"name"') > 0 AND strpos(raw, E'\\u0000') = 0
                AND json_typeof(data) = 'object'
                AND json_typeof(data -> 'name') = 'string' THEN
            name := left(data ->> 'name', 1000);
            IF octet_length(name) <> char_length(name) THEN
                name := normalize(regexp_replace(normalize(name, NFD), '[\u0300-\u036f]+', '',
                                                 'g'), NFC);
            END IF;
            doc := doc || to_tsvector({fts_config}, name);
        END IF;
        RETURN doc || array_to_tsvector(ARRAY[' a' || agent_pk::text]);
    END $$""",
    """CREATE TABLE message_terms (
        message_pk bigint PRIMARY KEY REFERENCES messages(pk) ON DELETE CASCADE,
        agent_pk bigint NOT NULL,
        tsv tsvector NOT NULL)""",
    "INSERT INTO message_terms (message_pk, agent_pk, tsv) SELECT pk, agent_pk, tsv"
    " FROM messages WHERE tsv IS NOT NULL",
    # fastupdate off, as migration 1's index: no pending list for every search to scan
    "CREATE INDEX message_terms_tsv ON message_terms USING gin (tsv) WITH (fastupdate = off)",
    # an agent's vectors newest first: automatic recall ranks the newest matches, and for a
    # query of common words they are among the agent's newest rows (search.py)
    "CREATE INDEX message_terms_newest ON message_terms (agent_pk, message_pk)",
    # no foreign keys: a check per queued row would cost the turn what this saves; the
    # indexer and the searches join `messages`, so a row whose message is gone is dropped
    """CREATE TABLE message_terms_pending (
        agent_pk bigint NOT NULL,
        message_pk bigint NOT NULL,
        PRIMARY KEY (agent_pk, message_pk))""",
    "DROP TRIGGER messages_tsv ON messages",
    "DROP FUNCTION memproxy_message_tsv()",
    "ALTER TABLE messages DROP COLUMN tsv",
    # migration 1's function, plus the new visible messages queued for indexing
    """CREATE OR REPLACE FUNCTION memproxy_recall_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE agents a SET recall_count = a.recall_count + d.n
        FROM (SELECT agent_pk, count(*) AS n FROM new_rows
              WHERE visible AND NOT superseded GROUP BY agent_pk) d
        WHERE a.pk = d.agent_pk;
        INSERT INTO message_terms_pending (agent_pk, message_pk)
        SELECT agent_pk, pk FROM new_rows WHERE visible;
        RETURN NULL;
    END $$""",
    # migration 14's function, returning at once when the statement updated no row: a turn's
    # begin statement carries a supersede that almost never matches, and its trigger ran two
    # UPDATE statements over empty transition tables on every turn
    """CREATE OR REPLACE FUNCTION memproxy_recall_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT EXISTS (SELECT FROM old_rows) THEN
            RETURN NULL;
        END IF;
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
    # a row whose indexed inputs change loses its vector and is queued again. DO UPDATE, not
    # DO NOTHING: it locks a row already queued, so the indexer (which skips locked rows)
    # cannot index the text this transaction is replacing; a row the indexer holds makes it
    # wait for the indexer's commit, then queue the row anew
    """CREATE FUNCTION memproxy_message_terms_stale() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM message_terms WHERE message_pk = NEW.pk;
        IF NEW.visible THEN
            INSERT INTO message_terms_pending (agent_pk, message_pk)
            VALUES (NEW.agent_pk, NEW.pk)
            ON CONFLICT (agent_pk, message_pk) DO UPDATE SET message_pk = excluded.message_pk;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER messages_terms_stale AFTER UPDATE OF text, data, visible, agent_pk
        ON messages FOR EACH ROW EXECUTE FUNCTION memproxy_message_terms_stale()""",
    # The indexer's batch, one round trip: take up to `batch` queued rows (not those a change
    # still running holds), then store their vectors in a statement of its own, whose
    # snapshot is later than every change committed before the rows were taken. No WAL flush
    # waited for: a crash loses the batch with its removal from the queue.
    """CREATE FUNCTION memproxy_index_message_terms(batch integer) RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        taken bigint[];
    BEGIN
        PERFORM set_config('synchronous_commit', 'off', true);
        WITH k AS (SELECT agent_pk, message_pk FROM message_terms_pending
                   LIMIT batch FOR UPDATE SKIP LOCKED),
             d AS (DELETE FROM message_terms_pending q USING k
                   WHERE q.agent_pk = k.agent_pk AND q.message_pk = k.message_pk
                   RETURNING q.message_pk)
        SELECT array_agg(message_pk) INTO taken FROM d;
        IF taken IS NULL THEN
            RETURN 0;
        END IF;
        INSERT INTO message_terms (message_pk, agent_pk, tsv)
        SELECT m.pk, m.agent_pk, memproxy_message_vector(m.agent_pk, m.text, m.data)
        FROM messages m WHERE m.pk = ANY(taken) AND m.visible
        ON CONFLICT (message_pk) DO UPDATE SET agent_pk = excluded.agent_pk, tsv = excluded.tsv;
        RETURN cardinality(taken);
    END $$""",
)
