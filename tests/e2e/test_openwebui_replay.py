"""Issue 15: replay what a real Open WebUI 0.12.4 sent (tests/fixtures/openwebui/, cut from the
recorded trace) against a real memproxy, request by request, exactly as it was sent.

Why: chat UIs keep a conversation as a tree and resend the branch on screen. Whatever the user
did (edit message 1 and switch back, edit deeper, continue a response, an action prompt, two
models answering at once, side requests with and without the chat id), the model must see
that branch and nothing else. So after EVERY chat request: each prompt memproxy sent upstream
for it, minus system messages and memproxy's own memory steps, equals the client's non-system
messages, in order, once each (the window is large, so nothing is evicted). Side requests
(task prompts, emoji, autocomplete, merge) must reach the upstream unchanged and store nothing;
temporary chats store nothing. memproxy is configured as the docs' Open WebUI recipe says: the
`X-OpenWebUI-User-Id` and `X-OpenWebUI-Chat-Id` headers name the agent and the conversation.

Every request of a flow is checked and all problems are reported together, so that one run
says which requests of the flow go wrong and what the upstream got instead.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import secrets
from tests.openwebui_flows import (
    FACT,
    FLOW_NAMES,
    FlowModel,
    Request,
    load_flow,
    read_answer,
    visible,
)
from tests.servers import run_concurrently

BIG_WINDOW = {"memory": {"default_context_window": 1_000_000}}


def _show(messages: list[dict]) -> str:
    """A short rendering of canonical messages, for failure reports."""
    parts = []
    for m in messages:
        text = m["content"] if not m.get("tool_calls") else \
            "calls " + ",".join(c["name"] for c in m["tool_calls"])
        parts.append(f"{m['role'][0]}:{text[:28]!r}")
    return "[" + ", ".join(parts) + "]"


class Replayer:
    """Sends a flow's requests to memproxy and collects what went wrong with each."""

    def __init__(self, proxy: Any, fake: Any, model: FlowModel) -> None:
        self.proxy = proxy
        self.fake = fake
        self.model = model
        self.http = httpx.Client(base_url=proxy.base_url, timeout=60.0)
        self.problems: list[str] = []
        self.chat_requests = 0
        self.memory_steps = 0  # upstream prompts holding memproxy's memory steps

    def send(self, request: Request) -> httpx.Response:
        self.model.expect(request)
        headers = {**request.headers, "authorization": f"Bearer {secrets.CLIENT_KEY}",
                   "content-type": "application/json"}
        return self.http.post("/chat/completions", content=json.dumps(request.body),
                              headers=headers)

    def stored(self, agent: str) -> dict[str, list[dict]]:
        """The agent's transcripts (superseded rows and memory steps included), by
        conversation; conversations without a message and an unknown agent count as nothing."""
        listing = self.http.get(f"{self.proxy.url}/v1/agents/{agent}/conversations")
        if listing.status_code == 404:
            return {}
        assert listing.status_code == 200, listing.text
        out = {}
        for conversation in listing.json()["data"]:
            cid = conversation["id"]
            page = self.http.get(f"{self.proxy.url}/v1/agents/{agent}/conversations/{cid}/messages",
                                 params={"include_superseded": "true", "limit": 1000})
            assert page.status_code == 200, page.text
            if page.json()["data"]:
                out[cid] = page.json()["data"]
        return out

    def replay(self, batch: list[Request]) -> None:
        before_calls = len(self.fake.requests)
        stores_nothing = all(r.side or (r.chat_id or "").startswith("temporary:") for r in batch)
        before_store = self.stored(batch[0].agent) if stores_nothing else None
        responses: list[httpx.Response | None] = [None] * len(batch)

        def run(i: int) -> None:
            responses[i] = self.send(batch[i])

        if len(batch) == 1:
            run(0)
        else:
            errors = run_concurrently(len(batch), run)
            assert not errors, errors
        calls = self.fake.requests[before_calls:]
        self.memory_steps += sum(_holds_memory_steps(c.json["messages"]) for c in calls)
        for request, response in zip(batch, responses, strict=True):
            assert response is not None
            mine = [c.json for c in calls if c.json.get("model") == request.body["model"]]
            if request.side:
                self.check_side(request, response, mine)
            else:
                self.check_chat(request, response, mine)
        if stores_nothing:
            after = self.stored(batch[0].agent)
            if after != before_store:
                what = "side request" if batch[0].side else "temporary chat"
                self.problems.append(
                    f"{batch[0].label}: a {what} changed what is stored: "
                    f"{_stored_change(before_store, after)}")

    def check_side(self, request: Request, response: httpx.Response, calls: list[dict]) -> None:
        if response.status_code != 200:
            self.problems.append(f"{request.label}: HTTP {response.status_code}")
        if calls != [request.body]:
            got = [_show(visible(c.get("messages") or [])) + f" tools={len(c.get('tools') or [])}"
                   for c in calls]
            self.problems.append(
                f"{request.label}: not passed through unchanged; the upstream got {got}")

    def check_chat(self, request: Request, response: httpx.Response, calls: list[dict]) -> None:
        self.chat_requests += 1
        if response.status_code != 200:
            self.problems.append(f"{request.label}: HTTP {response.status_code} "
                                 f"{response.text[:200]}")
            return
        want = visible(request.body["messages"])
        if not calls:
            self.problems.append(f"{request.label}: no upstream call")
        for n, call in enumerate(calls):
            got = visible(call["messages"])
            if got != want:
                self.problems.append(
                    f"{request.label}: upstream call {n + 1} of {len(calls)} had {len(got)} "
                    f"visible messages instead of the client's {len(want)}:\n"
                    f"      client: {_show(want)}\n      prompt: {_show(got)}")
        answer = read_answer(response, bool(request.body.get("stream")))
        expected = visible([{"role": "assistant", **(request.reply or {})}])[0]
        if answer != expected:
            self.problems.append(f"{request.label}: memproxy answered {_show([answer])}, "
                                 f"the upstream's reply was {_show([expected])}")


def _holds_memory_steps(messages: list[dict]) -> bool:
    """Whether a prompt has messages that `visible` drops besides system messages."""
    others = [m for m in messages if m.get("role") not in ("system", "developer")]
    return len(others) != len(visible(messages))


def _stored_change(before: dict, after: dict) -> str:
    changes = []
    for cid in sorted(set(before) | set(after)):
        old, new = before.get(cid, []), after.get(cid, [])
        if old != new:
            changes.append(f"{cid[:20]}: {len(old)} -> {len(new)} rows, "
                           f"{sum(m['superseded'] for m in old)} -> "
                           f"{sum(m['superseded'] for m in new)} superseded")
    return "; ".join(changes)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_open_webui_flow_sends_the_clients_branch_upstream(name, make_proxy, fake_upstream):
    flow = load_flow(name)
    model = FlowModel(flow)
    fake_upstream.responder = model
    proxy = make_proxy(BIG_WINDOW)
    replayer = Replayer(proxy, fake_upstream, model)
    try:
        for batch in flow.batches():
            replayer.replay(batch)
    finally:
        replayer.http.close()
    assert replayer.chat_requests > 0
    tells_facts = any(FACT.match(m["content"]) for r in flow.requests if not r.side
                      for m in r.body["messages"] if isinstance(m.get("content"), str))
    # the fake model makes memory edits for facts: their steps were in prompts and stripped
    assert replayer.memory_steps > 0 or not tells_facts
    assert not replayer.problems, (
        f"flow {name}: {len(replayer.problems)} problem(s):\n  " + "\n  ".join(replayer.problems))
