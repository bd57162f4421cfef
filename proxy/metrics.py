"""Prometheus metrics (`GET /metrics`).

One registry per app (not the process-global default), so several apps in one process — tests,
embedding — never share or double-register counters. Labels are bounded: modes, statuses,
tool names and outcomes; never agent ids, keys or message text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "memproxy_requests", "Chat completion requests by mode, stream and status.",
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
        self.reconcile = Counter(
            "memproxy_reconcile_decisions", "How client histories were reconciled.",
            ["action"], registry=r,
        )
        self.lock_wait = Histogram(
            "memproxy_lock_wait_seconds", "Time a turn waited for its conversation.",
            buckets=LATENCY_BUCKETS + (2.5, 5, 10, 30), registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
