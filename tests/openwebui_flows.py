"""The recorded Open WebUI flows (tests/fixtures/openwebui/) and a fake model that answers them.

Why: issue 15's first test replays what a real Open WebUI 0.12.4 sent, so the requests must be
exactly the recorded ones, and the upstream must give the replies that the client echoes in
its later requests; otherwise the replayed histories would not continue what memproxy stored.
`make_fixtures.py` beside the fixtures says how they were cut from the trace.

- `load_flow(name)` -> `Flow`: the users' headers and the requests in order, bodies expanded
  back to what was sent (the representative tool definitions put back, task prompts rebuilt).
- `Flow.batches()`: the requests in the order to send them; requests Open WebUI sent at once
  (two models answering side by side) are one batch.
- `FlowModel(flow)`: a `FakeUpstream.responder`. It strips system messages and memproxy's
  memory steps from the prompt, finds the flow request whose client messages that is, and
  answers its recorded reply; before the reply to a user message that tells a fact
  ("My name is", "I like") it makes a `core_memory_append` call, so that memory steps sit
  between the visible messages of later prompts. A prompt that is no flow request's (memproxy
  sent something else) gets the reply of the request in flight for that model (`expect`), so
  the replay goes on and the test reports the wrong prompt.
- `visible(messages)`: the comparable form of a message list: no system messages, no memory
  steps (assistant tool calls of memproxy's memory tools and their results), each message as
  role, text, tool calls and tool_call_id (content null and "" are the same).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.core.tools import MEMORY_TOOL_NAMES
from tests.fakes import Reply

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "openwebui"
PLACEHOLDER = "{{CHAT_HISTORY}}"
_SHARED = {"tools.json", "side_prompts.json"}
FLOW_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json") if p.name not in _SHARED)
FACT = re.compile(r"^(my name is|i like)\s+(.+?)[.!]?$", re.I)


@dataclass
class Request:
    """One recorded request: `row` in the trace (None: reconstructed), headers as sent."""

    row: int | None
    headers: dict[str, str]
    chat_id: str | None
    side: str | None
    body: dict[str, Any]
    reply: dict[str, Any] | None
    parallel: int | None
    trace_status: int | None

    @property
    def agent(self) -> str:
        return self.headers["x-openwebui-user-id"]

    @property
    def label(self) -> str:
        where = f"row {self.row}" if self.row is not None else "reconstructed"
        last = self.body["messages"][-1].get("content")
        text = last if isinstance(last, str) else json.dumps(last)
        return f"{where} ({self.side or 'chat'}, {self.body['model']}): {text[:40]!r}"


@dataclass
class Flow:
    name: str
    about: str
    requests: list[Request] = field(default_factory=list)

    def batches(self) -> list[list[Request]]:
        out: list[list[Request]] = []
        for request in self.requests:
            if request.parallel is not None and out and out[-1][0].parallel == request.parallel:
                out[-1].append(request)
            else:
                out.append([request])
        return out


def expand(body: dict, tools: dict, templates: dict[str, str]) -> dict:
    """A fixture body as sent: the tool set name replaced by the representative definitions of
    tools.json in the set's order, a task prompt reference by its template filled in."""
    out = dict(body)
    if isinstance(body.get("tools"), str):
        out["tools"] = [tools["tools"][n] for n in tools["sets"][body["tools"]]
                        if n in tools["tools"]]
    messages = []
    for m in body["messages"]:
        if isinstance(m.get("content"), dict) and "template" in m["content"]:
            ref = m["content"]
            m = {**m, "content": templates[ref["template"]].replace(PLACEHOLDER,
                                                                    ref["chat_history"])}
        messages.append(m)
    out["messages"] = messages
    return out


def load_flow(name: str) -> Flow:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    tools = json.loads((FIXTURES / "tools.json").read_text())
    templates = json.loads((FIXTURES / "side_prompts.json").read_text())
    flow = Flow(name, data["about"])
    for r in data["requests"]:
        headers = dict(data["users"][r["user"]])
        if r["chat_id"] is not None:
            headers["x-openwebui-chat-id"] = r["chat_id"]
        flow.requests.append(Request(
            row=r["row"], headers=headers, chat_id=r["chat_id"], side=r["side"],
            body=expand(r["body"], tools, templates), reply=r.get("reply"),
            parallel=r.get("parallel"), trace_status=r["trace_status"]))
    return flow


def _canonical(message: dict) -> dict:
    out: dict[str, Any] = {"role": message.get("role"), "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c.get("id"), "name": (c.get("function") or {}).get("name"),
             "arguments": (c.get("function") or {}).get("arguments")}
            for c in message["tool_calls"]
        ]
    if message.get("tool_call_id") is not None:
        out["tool_call_id"] = message["tool_call_id"]
    return out


def visible(messages: list[dict]) -> list[dict]:
    """The messages a client sees: no system messages, no memory steps (see module doc)."""
    memory_calls: set[str] = set()
    out = []
    for message in messages:
        role = message.get("role")
        calls = message.get("tool_calls") or []
        if role in ("system", "developer"):
            continue
        names = {(c.get("function") or {}).get("name") for c in calls}
        if role == "assistant" and calls and names <= MEMORY_TOOL_NAMES:
            memory_calls.update(c.get("id") for c in calls)
            continue
        if role == "tool" and message.get("tool_call_id") in memory_calls:
            continue
        out.append(_canonical(message))
    return out


def _key(model: str, messages: list[dict]) -> str:
    return json.dumps([model, visible(messages)], sort_keys=True)


class FlowModel:
    """A `FakeUpstream.responder` giving each flow request its recorded reply (module doc)."""

    SIDE_REPLY = "side answer"

    def __init__(self, flow: Flow) -> None:
        self._replies: dict[str, dict | None] = {}
        for request in flow.requests:
            self._replies.setdefault(_key(request.body["model"], request.body["messages"]),
                                     request.reply)
        self._lock = threading.Lock()
        self._expected: dict[str, dict | None] = {}

    def expect(self, request: Request) -> None:
        """The reply for a prompt that is no flow request's, while `request` is in flight."""
        with self._lock:
            self._expected[request.body["model"]] = request.reply

    def __call__(self, body: dict) -> Reply:
        messages = body.get("messages") or []
        key = _key(str(body.get("model")), messages)
        with self._lock:
            spec = self._replies[key] if key in self._replies else \
                self._expected.get(str(body.get("model")))
        if spec is None:
            return Reply(content=self.SIDE_REPLY)
        last = messages[-1] if messages else {}
        shown = visible(messages)
        fact = FACT.match(shown[-1]["content"]) if shown and shown[-1]["role"] == "user" else None
        offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        if fact and last.get("role") == "user" and "core_memory_append" in offered:
            what = "Name" if fact.group(1).lower() == "my name is" else "Likes"
            return Reply(tool_calls=[("core_memory_append",
                                      {"label": "human", "content": f"{what}: {fact.group(2)}"})])
        calls = spec.get("tool_calls") or []
        return Reply(
            content=spec.get("content") if not calls else (spec.get("content") or None),
            tool_calls=[(c["function"]["name"], c["function"]["arguments"]) for c in calls],
            call_ids=[c["id"] for c in calls],
        )


def read_answer(response: Any, stream: bool) -> dict:
    """The assistant message of a chat completion response (JSON or SSE), canonical form."""
    if not stream:
        return _canonical(response.json()["choices"][0]["message"])
    content: list[str] = []
    calls: dict[int, dict] = {}
    for line in response.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": None, "function": {
                    "name": "", "arguments": ""}})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    message = {"role": "assistant", "content": "".join(content),
               "tool_calls": [calls[i] for i in sorted(calls)]}
    return _canonical(message)
