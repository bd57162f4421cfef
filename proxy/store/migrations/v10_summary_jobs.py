"""Migration 10: the durable queue of background summaries (docs/paging.md).

When a turn pages messages out, the summary of what left the context is written in the
background, not by the turn. `summary_jobs` holds that work, at most one row per conversation
(the primary key), so a conversation's summaries are written one at a time and in order, by
whichever process claims the row:

- `from_seq`..`through_seq`: the evicted messages the job folds into `base_summary` (the last
  summary a summarizer wrote; '' for none). A later eviction while the job waits only moves
  `through_seq` on, so the queue of one conversation is one growing range.
- `pending_summary`: what the conversation shows meanwhile (`base_summary` plus a gap note);
  the job replaces the conversation's summary only while it is still this text, so a path
  moved to another branch in the meantime is never overwritten.
- `model`, `context_window`: how the turn that evicted would have summarized (the summary's
  bound is a share of the window).
- `owner`, `lease_until`: the process running it; a lease that runs out (a process killed
  mid-summary) lets another process, or the restarted one, claim it again.
- `attempts`, `not_before`, `last_error`: retries with backoff after a failed summarizer.
Deleted with its conversation.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    """CREATE TABLE summary_jobs (
        conversation_pk INTEGER PRIMARY KEY REFERENCES conversations (pk) ON DELETE CASCADE,
        from_seq INTEGER NOT NULL,
        through_seq INTEGER NOT NULL,
        base_summary TEXT NOT NULL DEFAULT '',
        pending_summary TEXT NOT NULL,
        model TEXT NOT NULL,
        context_window INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL,
        owner TEXT,
        lease_until REAL,
        last_error TEXT,
        created_at REAL NOT NULL)""",
    "CREATE INDEX summary_jobs_due ON summary_jobs (not_before)",
)

POSTGRES: tuple[str, ...] = (
    """CREATE TABLE summary_jobs (
        conversation_pk bigint PRIMARY KEY REFERENCES conversations (pk) ON DELETE CASCADE,
        from_seq bigint NOT NULL,
        through_seq bigint NOT NULL,
        base_summary text NOT NULL DEFAULT '',
        pending_summary text NOT NULL,
        model text NOT NULL,
        context_window integer NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        not_before double precision NOT NULL,
        owner text,
        lease_until double precision,
        last_error text,
        created_at double precision NOT NULL)""",
    "CREATE INDEX summary_jobs_due ON summary_jobs (not_before)",
)
