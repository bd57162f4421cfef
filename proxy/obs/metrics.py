"""Prometheus metrics (`GET /metrics`).

One registry per app (not the process-global default), so several apps in one process — tests,
embedding — never share or double-register counters. Labels are bounded: modes, statuses,
tool names and outcomes; never agent ids, keys or message text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "memproxy_requests",
            "Chat completion and Responses requests by mode, stream and status.",
            ["mode", "stream", "status"], registry=r,
        )
        self.overhead = Histogram(
            "memproxy_overhead_seconds", "Time spent in memproxy itself (upstream excluded).",
            ["mode"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream = Histogram(
            "memproxy_upstream_seconds", "Time waiting for the upstream during a turn.",
            buckets=UPSTREAM_BUCKETS, registry=r,
        )
        self.steps = Histogram(
            "memproxy_turn_steps", "Upstream calls per stateful turn.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 50), registry=r,
        )
        self.tool_calls = Counter(
            "memproxy_tool_calls", "Memory tool calls by tool and outcome.",
            ["tool", "outcome"], registry=r,
        )
        self.tokens = Counter(
            "memproxy_tokens", "Tokens reported by the upstream for stateful turns.",
            ["kind"], registry=r,
        )
        self.compactions = Counter(
            "memproxy_compactions", "Context compactions (evictions with a summary).",
            registry=r,
        )
        self.background_summaries = Counter(
            "memproxy_background_summaries",
            "Background summary jobs run by this process, by outcome (docs/paging.md): done,"
            " more (more was paged out meanwhile), lost (its lease was taken over), failed"
            " (retried later).", ["outcome"], registry=r,
        )
        self.reconcile = Counter(
            "memproxy_reconcile_decisions", "How client histories were reconciled.",
            ["action"], registry=r,
        )
        self.lock_wait = Histogram(
            "memproxy_lock_wait_seconds",
            "Time a turn waited for its conversation, its state read included (on Postgres"
            " the read takes the lease).",
            buckets=LATENCY_BUCKETS + (2.5, 5, 10, 30), registry=r,
        )

        # Hybrid search (docs/search.md): background embedding and query-embedding fallbacks.
        self.embedded = Counter(
            "memproxy_embeddings_embedded", "Texts embedded in the background, by kind.",
            ["kind"], registry=r,
        )
        self.embedding_failures = Counter(
            "memproxy_embeddings_failures",
            "Failed embedding calls: background batches, or search queries that fell back to "
            "full-text.", ["stage"], registry=r,
        )
        self.embedding_queue = Gauge(
            "memproxy_embeddings_queue", "Texts waiting in memory to be embedded.", registry=r,
        )

        # Upstream resilience (docs/resilience.md); `upstream` is an index, 0 = the primary.
        self.upstream_failures = Counter(
            "memproxy_upstream_failures", "Failed upstream calls by upstream and kind.",
            ["upstream", "kind"], registry=r,
        )
        self.circuit_state = Gauge(
            "memproxy_upstream_circuit_state",
            "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.", ["upstream"],
            registry=r,
        )
        self.fallbacks = Counter(
            "memproxy_upstream_fallbacks", "Calls answered by a fallback upstream.",
            ["upstream"], registry=r,
        )

        # Connection hygiene (api/connections.py): slow or surplus clients dropped.
        self.connections_dropped = Counter(
            "memproxy_connections_dropped",
            "Connections dropped: header_timeout, body_timeout, too_many_connections.",
            ["reason"], registry=r,
        )

        # Per-tenant usage (docs/forgetting.md, "Quotas"): counts read from the store at
        # each scrape (one grouped query over the agents table), never content.
        self.tenant_usage = Gauge(
            "memproxy_tenant_usage", "A tenant's agents, archival passages and messages.",
            ["tenant", "kind"], registry=r,
        )

    def set_tenant_usage(self, usage: dict[str, tuple[int, int, int]]) -> None:
        """`usage`: tenant -> (agents, passages, messages); tenants gone are dropped."""
        self.tenant_usage.clear()
        for tenant, (agents, passages, messages) in usage.items():
            self.tenant_usage.labels(tenant, "agents").set(agents)
            self.tenant_usage.labels(tenant, "passages").set(passages)
            self.tenant_usage.labels(tenant, "messages").set(messages)

    # proxy.upstream.UpstreamObserver, so the upstream client reports here
    def upstream_failure(self, upstream: str, kind: str) -> None:
        self.upstream_failures.labels(upstream, kind).inc()

    def circuit_changed(self, upstream: str, state: str) -> None:
        level = {"closed": 0, "half_open": 1, "open": 2}.get(state, 0)
        self.circuit_state.labels(upstream).set(level)

    def fallback_used(self, upstream: str) -> None:
        self.fallbacks.labels(upstream).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
