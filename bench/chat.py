"""The chat-UI client of the overhead benchmark: histories that are resent, and what memproxy
made of them.

A chat UI (Open WebUI, LibreChat) keeps the conversation itself and sends all of it, or its
last messages, with each new user message, then appends the reply it got. For memproxy to
find where such a history ends in what it stored, the client's history must be exactly the
stored path: the stateful scenarios therefore start from the transcript read back through
memproxy's REST API (`GET /v1/agents/{id}/conversations/{id}/messages`), never from a copy
the benchmark thinks it wrote. The direct baselines start from locally made text of the same
shape.

Whether the requests took the intended way is read from memproxy's
`memproxy_reconcile_decisions_total{action=...}` counter before and after each batch (append:
the history reached the active path's tip or a known node; anchor: a window matched a run of
the path's messages).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from .scenarios import CHAT_ID, TENANT, Scenario, paragraph

Message = dict[str, Any]
_DECISION = re.compile(r'^memproxy_reconcile_decisions_total\{action="([^"]+)"\}\s+(\S+)', re.M)


def made_up_history(messages: int, seed: int,
                    text: Callable[[random.Random, int], str] = paragraph) -> list[Message]:
    """`messages` alternating user and assistant messages shaped like bench/populate.py's
    (~50 and ~70 words), for a client that talks to the fake upstream directly."""
    rng = random.Random(seed)
    out: list[Message] = []
    for i in range(messages):
        user = i % 2 == 0
        out.append({"role": "user" if user else "assistant",
                    "content": text(rng, rng.randint(40, 60) if user else rng.randint(60, 80))})
    return out


def read_transcript(client: httpx.Client, base: str, agent_id: str,
                    conversation_id: str = CHAT_ID) -> list[Message]:
    """The conversation's visible user and assistant messages as memproxy stored them, oldest
    first (superseded ones are left out by the API), shaped as a client sends them."""
    out: list[Message] = []
    after = 0
    while True:
        r = client.get(f"{base}/v1/agents/{agent_id}/conversations/{conversation_id}/messages",
                       params={"after": after, "limit": 1000, "tenant": TENANT})
        r.raise_for_status()
        page = r.json()
        out += [{"role": m["role"], "content": m["content"]} for m in page["data"]
                if m.get("visible", True) and m["role"] in ("user", "assistant")]
        if not page.get("has_more") or page.get("next_after") is None:
            return out
        after = page["next_after"]


def reply_of(body: bytes) -> Message:
    """The assistant message a client appends to its history from a chat.completion."""
    message = orjson.loads(body)["choices"][0]["message"]
    return {"role": "assistant", "content": message.get("content") or ""}


class Histories:
    """Each chat scenario's per-agent histories, as its client holds them."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[list[Message]]] = {}

    def load(self, client: httpx.Client, memproxy: str, scenarios: Sequence[Scenario],
             agents: int) -> None:
        """Read each stateful chat agent's stored transcript back (checked against what was
        pre-populated); make up the direct baselines' histories."""
        for s in scenarios:
            if not s.chat:
                continue
            n = s.agents or agents
            if s.stateful:
                histories = []
                for k in range(n):
                    transcript = read_transcript(client, memproxy, f"{s.agent_prefix}-{k}")
                    if len(transcript) != s.stored_at_start:
                        raise RuntimeError(
                            f"{s.key}: agent {k} has {len(transcript)} stored messages on its "
                            f"path, {s.stored_at_start} were pre-populated")
                    histories.append(transcript)
            else:
                histories = [made_up_history(s.history_at_start, seed=k) for k in range(n)]
            if s.window:
                histories = [h[-s.window:] for h in histories]
            self._by_key[s.key] = histories

    def messages(self, s: Scenario, agent: int, new: Message) -> list[Message]:
        """What the client sends: its history (or the last `window` of it) and the new one."""
        history = self._by_key[s.key][agent]
        return [*(history[-s.window:] if s.window else history), new]

    def answered(self, s: Scenario, agent: int, new: Message, reply: Message) -> None:
        history = self._by_key[s.key][agent]
        history += [new, reply]
        if s.window and len(history) > s.window:
            del history[:-s.window]


def reconcile_counts(client: httpx.Client, memproxy: str) -> dict[str, int]:
    """memproxy's reconcile decisions so far, by action (empty if it exports none)."""
    r = client.get(f"{memproxy}/metrics")
    if r.status_code != 200:
        return {}
    return {action: int(float(value)) for action, value in _DECISION.findall(r.text)}


def add_decisions(into: dict[str, int], before: dict[str, int], after: dict[str, int]) -> None:
    for action, value in after.items():
        if value - before.get(action, 0):
            into[action] = into.get(action, 0) + value - before.get(action, 0)
