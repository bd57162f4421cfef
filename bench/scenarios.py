"""What the overhead benchmark sends: the scenarios, their text, the shared constants.

Split from `bench/overhead.py` (which runs them) so that the scenario list, the client styles
and the report can grow without one file holding everything.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .fake_upstream import REPLY_WORDS

MODEL = "bench-model"
UPSTREAM_KEY = "sk-bench"
TARGET_P50_MS = 2.0  # issue #5: stateful overhead p50 <= 2 ms, p99 <= 10 ms, flat to 100k stored
TARGET_P99_MS = 10.0
TARGET_TTFT_P50_MS = 3.0
LETTA_P50_MS = 145.0  # Letta 0.11.7 (SQLite), mock upstream, same kind of machine: REFERENCE.md
LETTA_P95_MS = 190.0
LITELLM_P50_MS = 2.0  # LiteLLM's published median relay overhead
TENANT = "default"  # the implicit tenant of a server with no API keys

# --------------------------------------------------------------------------- text


# the fake model's words, and some more for users
_WORDS = REPLY_WORDS + """
remember forget prefer usually often never always maybe probably certainly quickly slowly early
late small large quiet busy simple careful honest useful green blue warm cold fresh old young
""".split()


def _sentence(rng: random.Random, words: int) -> str:
    chosen = [rng.choice(_WORDS) for _ in range(words)]
    chosen[0] = chosen[0].capitalize()
    return " ".join(chosen) + rng.choice([".", ".", ".", "?", "!"])


def paragraph(rng: random.Random, words: int) -> str:
    """English-looking text of about `words` words (~1.2 tokens per word with punctuation)."""
    out: list[str] = []
    left = words
    while left > 0:
        n = min(left, rng.randint(7, 16))
        out.append(_sentence(rng, n))
        left -= n
    return " ".join(out)


def user_text(index: int) -> str:
    """The new user message of measured request `index`: 15-40 words, different each time."""
    rng = random.Random(index)
    return f"Message {index}. " + paragraph(rng, rng.randint(15, 40))

# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str
    label: str
    target: str  # "upstream" or "memproxy"
    stream: bool = False
    agent_prefix: str | None = None  # stateful when set
    stored_at_start: int = 0  # messages per conversation before warm-up
    baseline: str = "a"
    agents: int | None = None  # agents to rotate over; None: the run's --agents
    in_context: bool = False  # stored messages are in the context window (else paged out)
    in_context_last: int = 0  # paged out except the last N stored messages
    # The client (bench/chat.py): "sdk" sends only the new user message; "history" keeps its
    # conversation and resends it with each new message, as a chat UI does (only the last
    # `window` messages when set), starting from `history_at_start` messages: the stored
    # transcript read back from memproxy when stateful, else text made up locally.
    client: str = "sdk"
    window: int | None = None
    history_at_start: int = 0
    api: str = "chat"  # or "responses": POST /v1/responses with the new message as `input`
    # results
    sent_messages: list[int] = field(default_factory=list)  # messages in each measured body
    actions: dict[str, int] = field(default_factory=dict)  # memproxy's reconcile decisions
    warmup_actions: dict[str, int] = field(default_factory=dict)
    total_ms: list[float] = field(default_factory=list)  # end-to-end, whole response read
    ttft_ms: list[float] = field(default_factory=list)  # streaming: first content token
    memproxy_ms: list[float] = field(default_factory=list)  # x-memproxy-overhead-ms
    context_tokens: list[int] = field(default_factory=list)  # x-memproxy-context-tokens
    upstream_calls: int = 0
    upstream_bytes: int = 0
    rss_after: int | None = None
    peak_rss: int | None = None

    @property
    def stateful(self) -> bool:
        return self.agent_prefix is not None

    @property
    def chat(self) -> bool:
        return self.client == "history"

    @property
    def measured(self) -> list[float]:
        """The latency this scenario is judged by: TTFT when streaming, else end-to-end."""
        return self.ttft_ms if self.stream else self.total_ms


CHAT_ID = "bench-chat"  # the chat scenarios' conversation, named as Open WebUI names it
CHAT_HEADER = "x-openwebui-chat-id"  # a conversation header that also marks a history client


def level_key(stored: int) -> str:
    """c1k, c10k, c100k, c2500, ..."""
    return f"c{stored // 1000}k" if stored % 1000 == 0 else f"c{stored}"


def default_scenarios(with_streaming: bool = True, levels: Sequence[int] = (1000, 10_000, 100_000),
                      stored_agents: int = 2, in_context: int = 0) -> list[Scenario]:
    """(a), (b), (c0), one stateful scenario per stored level (paged out, as paging keeps them
    in a long conversation), optionally one with `in_context` messages all in the window, and
    the streaming trio."""
    scenarios = [
        Scenario("a", "(a) direct to fake upstream", "upstream"),
        Scenario("b", "(b) memproxy pass-through", "memproxy"),
        Scenario("c0", "(c0) stateful, empty agent at start", "memproxy", agent_prefix="bench-0"),
        # the Responses API (docs/responses.md): no agent (translated, one upstream call, the
        # response stored), and stateful like c0; judged against b and c0
        Scenario("r-b", "(r-b) Responses, no agent", "memproxy", api="responses"),
        Scenario("r-c0", "(r-c0) Responses, stateful, empty agent at start", "memproxy",
                 agent_prefix="bench-r0", api="responses"),
    ]
    for stored in levels:
        key = level_key(stored)
        scenarios.append(Scenario(key, f"({key}) stateful, {stored:,} stored, paged out",
                                  "memproxy", agent_prefix=f"bench-{key}",
                                  stored_at_start=stored, agents=stored_agents))
    if in_context:
        key = f"{level_key(in_context)}-in"
        scenarios.append(Scenario(key, f"({key}) stateful, {in_context:,} stored, all in context",
                                  "memproxy", agent_prefix=f"bench-{key}",
                                  stored_at_start=in_context, in_context=True))
    if with_streaming:
        scenarios += [
            Scenario("s-a", "(s-a) stream, direct to fake upstream", "upstream", stream=True,
                     baseline="s-a"),
            Scenario("s-b", "(s-b) stream, memproxy pass-through", "memproxy", stream=True,
                     baseline="s-a"),
            Scenario("s-c0", "(s-c0) stream, stateful, empty agent at start", "memproxy",
                     stream=True, agent_prefix="bench-s0", baseline="s-a"),
            Scenario("rs-b", "(rs-b) stream, Responses, no agent", "memproxy", stream=True,
                     baseline="s-a", api="responses"),
            Scenario("rs-c0", "(rs-c0) stream, Responses, stateful", "memproxy", stream=True,
                     agent_prefix="bench-rs0", baseline="s-a", api="responses"),
        ]
    return scenarios



def chat_scenarios(history: int = 200, window: int = 20,
                   window_levels: Sequence[int] = (10, 1000, 10_000),
                   window_in_context: int = 40) -> list[Scenario]:
    """Chat-UI clients (issue 15's benchmark), each against its own direct baseline that sends
    the same kind of body straight to the fake upstream:

    - `hN`: the conversation holds N stored messages, all in context; every request resends
      the whole history plus a new message (Open WebUI): memproxy must find that the history
      reaches its active path's tip;
    - `wW-cN`: N stored messages on the path (paged out but for the last `window_in_context`,
      as paging leaves a long chat), and a client that resends only its last W messages plus a
      new one: memproxy must anchor that window on its path, at a cost flat in N.
    """
    out: list[Scenario] = []
    if history:
        key = f"h{history}"
        out += [
            Scenario(f"{key}-a", f"({key}-a) direct, resends all {history:,}+ messages",
                     "upstream", baseline=f"{key}-a", client="history",
                     history_at_start=history),
            Scenario(key, f"({key}) chat UI, resends all {history:,}+ messages", "memproxy",
                     agent_prefix=f"bench-{key}", stored_at_start=history, in_context=True,
                     baseline=f"{key}-a", client="history", history_at_start=history),
        ]
    if window and window_levels:
        base = f"w{window}-a"
        out.append(Scenario(base, f"({base}) direct, resends its last {window} messages",
                            "upstream", baseline=base, client="history", window=window,
                            history_at_start=window))
        for stored in window_levels:
            key = f"w{window}-{level_key(stored)}"
            out.append(Scenario(
                key, f"({key}) chat UI, resends its last {window}, {stored:,} stored",
                "memproxy", agent_prefix=f"bench-{key}", stored_at_start=stored,
                in_context_last=window_in_context, baseline=base, client="history",
                window=window, history_at_start=min(stored, window)))
    return out
