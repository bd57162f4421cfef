"""The settings sections: one pydantic model per TOML table (`[server]`, `[memory]`, …).

Sections are models with `extra="forbid"`, so a misspelt key is an error at start-up rather
than a silent default. Every key is documented in `config.example.toml`; how a file and the
environment become a `Settings` is `loading.py`.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _shown(value: str) -> str:
    """`value` for an error message: without user info or query, where credentials hide."""
    return repr(re.sub(r"//[^/@]*@", "//", value.split("?", 1)[0])[:100])


def http_url(value: str) -> str:
    """Accept an http(s) URL with a host; anything else fails at start-up, not at the first
    request (`notaurl` would otherwise be joined with a path and fail with an empty host)."""
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"invalid port in {_shown(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, such as "
                         f"http://localhost:11434/v1 (got {_shown(value)})")
    return value


DATABASE_SCHEMES = ("sqlite:", "postgresql://", "postgres://")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # On SIGTERM: stop accepting, let in-flight turns (streams included) finish for this long.
    shutdown_timeout_s: float = Field(default=30.0, ge=0)
    # Browser origins allowed to call the API (CORS); empty = no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # Serve with no API key on an address other than loopback (`memproxy serve` refuses
    # otherwise: an open server makes every caller an admin).
    allow_open: bool = False
    # Connection hygiene (api/connections.py): a request head, then its body, must arrive
    # within these many seconds or the connection is dropped; past max_connections open
    # connections a new one is closed at once. 0 = no bound.
    header_timeout_s: float = Field(default=15.0, ge=0)
    body_timeout_s: float = Field(default=30.0, ge=0)
    max_connections: int = Field(default=0, ge=0)


class DatabaseSettings(_Section):
    url: str = "sqlite:///memproxy.db"
    # SQLite's `PRAGMA synchronous` (docs/storage.md): NORMAL survives a process crash, FULL
    # also the last commits across a power loss, at an fsync per commit. Postgres ignores it.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Postgres (docs/storage.md, "Durability: Postgres"): "durable" commits a turn's input
    # after its WAL flush, like every other write; "fast" does not wait for that flush (the
    # turn's outcome still does, and flushes the input with it): only a crash of the Postgres
    # server in the ~0.6 s before can lose the input of a turn not yet answered. SQLite
    # ignores it.
    postgres_input_commit: Literal["durable", "fast"] = "durable"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        """An unknown scheme (mysql://) is a configuration error, not a store traceback."""
        if not value.strip():
            raise ValueError("is empty: use sqlite:///path.db or postgresql://host/db")
        if "://" in value and not value.startswith(DATABASE_SCHEMES):
            scheme = value.split("://", 1)[0]
            raise ValueError(f"unsupported database URL scheme {scheme!r}: use "
                             "sqlite:///path.db or postgresql://host/db")
        return value

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper_synchronous(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class FallbackSettings(_Section):
    """One `[[upstream.fallbacks]]` entry (docs/resilience.md)."""

    base_url: str
    api_key: str | None = None  # only this key is sent here, never the primary's or a client's
    models: list[str] = Field(default_factory=list)  # globs of the models it serves; [] = all
    model: str | None = None  # send this model name instead of the requested one

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)


class UpstreamSettings(_Section):
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    forward_client_key: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0
    max_retries: int = 2
    models_cache_s: float = 300.0
    lean_transport: bool = True
    # Resilience (docs/resilience.md): time to a stream's first token, the whole request's
    # deadline, the circuit breaker per upstream (0 failures = off), and fallback upstreams.
    first_token_timeout_s: float = Field(default=60.0, gt=0)
    request_deadline_s: float = Field(default=900.0, gt=0)
    circuit_failures: int = Field(default=5, ge=0)
    circuit_reset_s: float = Field(default=30.0, gt=0)
    fallbacks: list[FallbackSettings] = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)


class AuthSettings(_Section):
    keys: dict[str, str] = Field(default_factory=dict)
    admin_keys: list[str] = Field(default_factory=list)
    # stored keys (`memproxy keys`) are re-read at most this often: a removed key stops working
    # within it, in every running process (api/auth.py)
    key_recheck_seconds: float = Field(default=10.0, gt=0, le=3600)


# The default side-request prompts of the chat UIs we know, as their sources write them (each
# anchored at the start of the message, so a normal message quoting one is not matched).
AUXILIARY_PATTERNS = (
    # Open WebUI: titles, tags, follow-ups, search and retrieval queries, image prompts,
    # autocompletion
    r"^\s*### Task:",
    # Open WebUI: the emoji of call mode (it carries the chat id)
    r"^\s*Your task is to reflect the speaker.s likely facial expression through a fitting emoji",
    # Open WebUI: "Merge Responses" of several models (it carries no chat id)
    r"^\s*You have been provided with a set of responses from various models to the latest"
    r" user query:",
    # LibreChat: the conversation title (agents endpoints, "completion" and "structured")
    r"^\s*Provide a concise, 5-word-or-less title for the conversation, using title case",
    r"^\s*Analyze this conversation and provide:\s+1\. The detected language of the"
    r" conversation\s+2\. A concise title",
    # LibreChat: the title of its older clients (a user message for Ollama)
    r"^\s*Please generate a concise, 5-word-or-less title for the conversation",
)
AUXILIARY_SYSTEM_PATTERNS = (
    # Open WebUI: choosing tools for a model without native function calling
    r"(?s)^\s*Available Tools: .*Your task is to choose and return the correct tool\(s\) from"
    r" the list of available tools",
    # LibreChat: the title of its older clients (a system message by default)
    r"^\s*Please generate a concise, 5-word-or-less title for the conversation",
)


class IdentitySettings(_Section):
    agent_headers: list[str] = Field(
        default_factory=lambda: ["X-Agent-Id", "X-OpenWebUI-User-Id"]
    )
    conversation_headers: list[str] = Field(
        default_factory=lambda: ["X-Conversation-Id", "X-OpenWebUI-Chat-Id"]
    )
    history_client_headers: list[str] = Field(default_factory=lambda: ["X-OpenWebUI-Chat-Id"])
    agent_from_user: bool = False
    require_agent: bool = False
    # Side requests (docs/clients.md): passed through, stored nowhere. Only a request without
    # assistant or tool messages can be one; then its last user message is matched against
    # `auxiliary_patterns` and its system messages against `auxiliary_system_patterns`.
    auxiliary_patterns: list[str] = Field(default_factory=lambda: list(AUXILIARY_PATTERNS))
    auxiliary_system_patterns: list[str] = Field(
        default_factory=lambda: list(AUXILIARY_SYSTEM_PATTERNS))

    # Temporary chats (docs/temporary-chats.md): a conversation id starting with one of these
    # (Open WebUI's "Temporary Chat", and its local form), like the header X-Memory: ephemeral,
    # is answered with memory read-only and stores nothing. [] turns the prefixes off.
    ephemeral_conversation_prefixes: list[str] = Field(
        default_factory=lambda: ["temporary:", "local:"])

    @field_validator("ephemeral_conversation_prefixes")
    @classmethod
    def _non_empty_prefixes(cls, value: list[str]) -> list[str]:
        if any(not prefix for prefix in value):
            raise ValueError("an empty prefix would make every conversation temporary")
        return value

    @field_validator("auxiliary_patterns", "auxiliary_system_patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value


class BlockSettings(_Section):
    value: str = ""
    description: str = ""
    limit: int = 5000
    read_only: bool = False


def _default_blocks() -> dict[str, BlockSettings]:
    return {
        "persona": BlockSettings(
            description=(
                "Who you are and how you behave. Edit it when the user asks you to change "
                "how you act."
            ),
        ),
        "human": BlockSettings(
            description=(
                "What you know about the user: name, preferences, facts they shared. "
                "Keep it current and concise."
            ),
        ),
    }


class AgentSettings(_Section):
    max_steps: int = 8
    lock_timeout_s: float = 30.0
    lease_ttl_s: float = 30.0
    resend_window_s: float = Field(default=60.0, ge=0)
    context_cache_messages: int = Field(default=20_000, ge=0)
    base_instructions: str | None = None
    blocks: dict[str, BlockSettings] = Field(default_factory=_default_blocks)


class MemorySettings(_Section):
    default_context_window: int = 8192
    reserve_output_tokens: int = 1024
    warn_at: float = 0.75
    compact_at: float = 0.9
    compact_to: float = 0.6
    summarizer_model: str | None = None
    summarizer_timeout_s: float = 60.0
    # Summaries of paged-out messages (docs/paging.md): "background" pages out at once with a
    # gap note and writes the summary in a durable job (no turn waits for it); "inline" makes
    # the turn that pages out wait for its summary (the behaviour before background jobs).
    summaries: Literal["background", "inline"] = "background"
    summary_workers: int = Field(default=2, ge=1)  # jobs run at once by each process
    # A job's lease: a process that dies mid-summary leaves its job to others after this long.
    # Longer than a summary takes (a few summarizer calls of summarizer_timeout_s at most).
    summary_lease_s: float = Field(default=300.0, gt=0)
    summary_poll_s: float = Field(default=5.0, gt=0)  # how often to look for others' jobs
    summary_retry_max_s: float = Field(default=600.0, gt=0)  # the longest backoff
    # Automatic recall (docs/memory.md): before the call, the new user message is searched in
    # recall and archival memory and the best snippets go into the system prompt. "no-tools":
    # only for models served without tools; "always": for every model (weak models forget to
    # search); "off": never.
    auto_recall: Literal["off", "no-tools", "always"] = "no-tools"
    auto_recall_tokens: int = Field(default=600, ge=0)  # the section's budget
    # conversation_search results and automatically recalled messages show this many turns
    # before and after each hit (core/hit_context.py, docs/search.md); 0: the hits alone.
    search_neighbours: int = Field(default=1, ge=0, le=5)
    # Models without tools cannot edit memory: with this, the summarizer model reads each of
    # their turns afterwards and appends the facts the user stated to the `human` block.
    extract_facts: bool = False


class ModelSettings(_Section):
    context_window: int | None = None
    # false: never offer tools to this model (memory in the prompt only, docs/memory.md);
    # unset: offer them, and stop when the upstream answers that the model does not take them
    tools: bool | None = None


class LimitsSettings(_Section):
    max_body_bytes: int = 32 * 1024 * 1024
    max_messages: int = 50_000
    max_message_chars: int = 4_000_000
    # The most memproxy reads of one upstream answer (docs/resilience.md): a JSON body, the
    # text of a streamed answer (content, reasoning, tool-call arguments) or an error body.
    max_upstream_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Per API key (per tenant on an open server), per process; 0 = no limit.
    requests_per_minute: int = Field(default=0, ge=0)
    concurrent_turns: int = Field(default=0, ge=0)
    # Per-tenant quotas (docs/forgetting.md, "Quotas"); 0 = off. Checked inside the write
    # transaction that would go over them, so a burst cannot overshoot.
    agents_per_tenant: int = Field(default=0, ge=0)
    passages_per_agent: int = Field(default=0, ge=0)
    archival_inserts_per_turn: int = Field(default=0, ge=0)
    # Measured in the background every storage_check_s (turn/storage_meter.py).
    storage_mb_per_tenant: int = Field(default=0, ge=0)
    storage_check_s: float = Field(default=300.0, gt=0)


class LoggingSettings(_Section):
    level: str = "INFO"
    include_content: bool = False
    format: Literal["text", "json"] = "text"


class EmbeddingsSettings(_Section):
    """Hybrid search (docs/search.md): vectors from an OpenAI-compatible /embeddings API."""

    enabled: bool = False
    base_url: str | None = None  # None: the upstream's base_url
    api_key: str | None = None  # None: the upstream's api_key
    model: str = "text-embedding-3-small"
    dimensions: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, ge=1, le=2048)
    max_queue: int = Field(default=10_000, ge=1)
    query_timeout_s: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    cache_mb: int = Field(default=1024, ge=1)
    # Asymmetric models (e5, bge, nomic, ...) want queries and documents marked differently:
    # text prepended to each, and/or the provider's `input_type` field (Voyage, Cohere-style).
    query_prefix: str = Field(default="", max_length=500)
    document_prefix: str = Field(default="", max_length=500)
    query_input_type: str | None = Field(default=None, min_length=1, max_length=100)
    document_input_type: str | None = Field(default=None, min_length=1, max_length=100)
    # A message is embedded together with this many turns before it in its conversation
    # (each clipped to its last 300 characters): a reply such as "Yes, last Sunday" is found
    # by what it answers. Passages are embedded alone. 0: each message alone.
    document_context_turns: int = Field(default=1, ge=0, le=3)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return value if value is None else http_url(value)


class ABSettings(_Section):
    """A/B mode (docs/ab.md): list every upstream model twice, raw and with memory."""

    # On: GET /v1/models lists NAME and NAME+memory; NAME is pass-through (no memory) even
    # when the request names an agent, NAME+memory is stateful (the suffix never goes upstream).
    expose_raw_models: bool = False
    memory_suffix: str = Field(default="+memory", min_length=1)


class ResponsesSettings(_Section):
    """The Responses and Conversations APIs (docs/responses.md)."""

    # Stored responses older than this many days are deleted (0: kept, like conversations).
    # Conversations API conversations have no expiry, as at OpenAI.
    ttl_days: float = Field(default=0.0, ge=0)
    # With no agent named, relay /v1/responses to an upstream that speaks the Responses API
    # itself instead of translating to Chat Completions (no stored chains on memproxy's side).
    passthrough: bool = False
    # previous_response_id chains longer than this are refused (a chain is resent each turn).
    max_chain: int = Field(default=10_000, ge=1)


class RetentionSettings(_Section):
    """Forgetting old data in the background (docs/forgetting.md); 0 = keep forever. An agent's
    settings `retention_messages_days` / `retention_responses_days` override these."""

    messages_days: float = Field(default=0.0, ge=0)
    responses_days: float = Field(default=0.0, ge=0)
    interval_s: float = Field(default=3600.0, gt=0)  # how often the job runs
    batch: int = Field(default=500, ge=1, le=10_000)  # messages per transaction


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    embeddings: EmbeddingsSettings = Field(default_factory=EmbeddingsSettings)
    ab: ABSettings = Field(default_factory=ABSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("models")
    @classmethod
    def _non_empty_patterns(cls, value: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        for pattern in value:
            if not pattern:
                raise ValueError("model patterns must not be empty")
        return value
