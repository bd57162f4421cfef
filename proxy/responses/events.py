"""Responses streaming events (`ResponseStreamEvent`), written from a chat stream's deltas.

`EventWriter` is fed what a Chat Completions stream yields, in order (text deltas, refusal
deltas, tool-call deltas by index) and returns the events to send for each. It keeps the output
items it announced, so `writer.output()` is exactly what the final `Response` lists, with the
same ids the stream used.

The order follows OpenAI's: an item is `added`, filled by deltas, then `done`; a message's text
part is `added`, streamed, `done`. A chat stream sends its content before its tool calls, so the
first tool-call delta closes the message item. Tool calls stay open until the end because a chat
stream may interleave the argument deltas of several calls (they are told apart by `index`);
text that arrives after a tool call (rare) becomes its own message item at the end, so no item
is ever reopened. `sequence_number` counts every event from 0.

`replay` regenerates the events of a stored response (one delta per text part, one arguments
delta per call), for `GET /v1/responses/{id}?stream=true`. `encode` is the SSE framing.
"""

from __future__ import annotations

import copy
from typing import Any

from ..fastjson import dumps
from .ids import new_id
from .items import IdMaker
from .output import output_text_part

TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete",
            "failed": "response.failed", "cancelled": "response.failed"}


def encode(event: dict) -> bytes:
    """One SSE frame: `event: <type>`, `data: <json>`, a blank line."""
    return b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"


def _empty_part(kind: str) -> dict:
    return output_text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}


class EventWriter:
    """Turns one response's chat deltas into Responses events (stateful, no I/O)."""

    def __init__(self, ids: IdMaker = new_id) -> None:
        self._ids = ids
        self._sequence = 0
        self._items: list[dict] = []
        self._message: int | None = None  # output index of the open message item
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index, while open
        self._late: list[tuple[str, str]] = []  # (part type, delta) after tool calls: a
        # message item of its own at the end

    # -- the events ---------------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> dict:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def created(self, response: dict) -> list[dict]:
        return [self._emit("response.created", response=copy.deepcopy(response))]

    def in_progress(self, response: dict) -> list[dict]:
        return [self._emit("response.in_progress", response=copy.deepcopy(response))]

    def text(self, delta: str) -> list[dict]:
        """A chat `delta.content`."""
        if not delta:
            return []
        return self._message_delta("output_text", delta)

    def refusal(self, delta: str) -> list[dict]:
        """A chat `delta.refusal`."""
        return self._message_delta("refusal", delta)

    def tool_call(self, index: int, id: str | None = None, name: str | None = None,
                  arguments: str | None = None) -> list[dict]:
        """One chat tool-call delta (`delta.tool_calls[k]`: its index, id, function name and
        arguments fragment; the id and name usually come only with the first)."""
        events = self._close_message("completed")
        if index not in self._calls:
            item = {"id": self._ids("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": id or "", "name": name or "", "arguments": ""}
            self._calls[index] = len(self._items)
            self._items.append(item)
            events.append(self._emit("response.output_item.added",
                                     output_index=self._calls[index], item=dict(item)))
        output_index = self._calls[index]
        item = self._items[output_index]
        if id and not item["call_id"]:
            item["call_id"] = id
        if name and not item["name"]:
            item["name"] = name
        if arguments:
            item["arguments"] += arguments
            events.append(self._emit("response.function_call_arguments.delta",
                                     item_id=item["id"], output_index=output_index,
                                     delta=arguments))
        return events

    def close(self, status: str = "completed") -> list[dict]:
        """Finish every open item (`status`: the items' status, completed or incomplete)."""
        events = self._close_message(status)
        for output_index in sorted(self._calls.values()):
            item = self._items[output_index]
            item["call_id"] = item["call_id"] or self._ids("call")  # an upstream that sent none
            events.append(self._emit("response.function_call_arguments.done",
                                     item_id=item["id"], name=item["name"],
                                     output_index=output_index, arguments=item["arguments"]))
            item["status"] = status
            events.append(self._emit("response.output_item.done", output_index=output_index,
                                     item=copy.deepcopy(item)))
        self._calls.clear()
        if self._late:
            late, self._late = self._late, []
            for kind, delta in late:
                events += self._part_delta(kind, delta)
            events += self._close_message(status)
        return events

    def finish(self, response: dict) -> list[dict]:
        """Close the open items, then the terminal event for `response["status"]`
        (`response.completed`, `.incomplete` or `.failed`) carrying `response` with
        `output` = `self.output()`."""
        status = response.get("status", "completed")
        events = self.close("completed" if status == "completed" else "incomplete")
        final = {**response, "output": self.output()}
        events.append(self._emit(TERMINAL.get(status, "response.failed"), response=final))
        return events

    def fail(self, response: dict) -> list[dict]:
        """A failed response (its `error` set by the caller): `response.failed`."""
        return self.finish({**response, "status": "failed"})

    def error(self, message: str, code: str | None = None, param: str | None = None
              ) -> list[dict]:
        """An `error` event (a failure that is not a response's own)."""
        return [self._emit("error", code=code, message=message, param=param)]

    def output(self) -> list[dict]:
        """The output items so far, in output order (copies)."""
        return copy.deepcopy(self._items)

    # -- the message item and its parts -------------------------------------------------------

    def _message_delta(self, kind: str, delta: str) -> list[dict]:
        if not delta:
            return []
        if self._calls:  # no item is reopened: after tool calls, text waits for the end
            self._late.append((kind, delta))
            return []
        return self._part_delta(kind, delta)

    def _part_delta(self, kind: str, delta: str) -> list[dict]:
        events: list[dict] = []
        if self._message is None:
            item = {"id": self._ids("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
            self._message = len(self._items)
            self._items.append(item)
            events.append(self._emit("response.output_item.added", output_index=self._message,
                                     item=copy.deepcopy(item)))
        item = self._items[self._message]
        parts = item["content"]
        if not parts or parts[-1]["type"] != kind:
            events += self._close_part()
            parts.append(_empty_part(kind))
            events.append(self._emit("response.content_part.added", item_id=item["id"],
                                     output_index=self._message, content_index=len(parts) - 1,
                                     part=_empty_part(kind)))
        part = parts[-1]
        where = {"item_id": item["id"], "output_index": self._message,
                 "content_index": len(parts) - 1}
        if kind == "output_text":
            part["text"] += delta
            events.append(self._emit("response.output_text.delta", **where, delta=delta,
                                     logprobs=[]))
        else:
            part["refusal"] += delta
            events.append(self._emit("response.refusal.delta", **where, delta=delta))
        return events

    def _close_part(self) -> list[dict]:
        """The `.done` events of the message's last part (the only one that can be open)."""
        if self._message is None or not self._items[self._message]["content"]:
            return []
        item = self._items[self._message]
        part = item["content"][-1]
        where = {"item_id": item["id"], "output_index": self._message,
                 "content_index": len(item["content"]) - 1}
        if part["type"] == "output_text":
            done = self._emit("response.output_text.done", **where, text=part["text"],
                              logprobs=[])
        else:
            done = self._emit("response.refusal.done", **where, refusal=part["refusal"])
        return [done, self._emit("response.content_part.done", **where, part=dict(part))]

    def _close_message(self, status: str) -> list[dict]:
        if self._message is None:
            return []
        events = self._close_part()
        item = self._items[self._message]
        item["status"] = status
        events.append(self._emit("response.output_item.done", output_index=self._message,
                                 item=copy.deepcopy(item)))
        self._message = None
        return events

    # -- replaying a stored response ----------------------------------------------------------

    def replay_item(self, item: dict) -> list[dict]:
        """The events of one finished output item, as if it had just been streamed."""
        output_index = len(self._items)
        self._items.append(copy.deepcopy(item))
        kind = item.get("type")
        if kind == "message":
            added = {**item, "status": "in_progress", "content": []}
        elif kind == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
        else:
            added = item
        events = [self._emit("response.output_item.added", output_index=output_index,
                             item=copy.deepcopy(added))]
        if kind == "message":
            for content_index, part in enumerate(item.get("content") or []):
                events += self._replay_part(item["id"], output_index, content_index, part)
        elif kind == "function_call":
            where = {"item_id": item["id"], "output_index": output_index}
            events.append(self._emit("response.function_call_arguments.delta", **where,
                                     delta=item["arguments"]))
            events.append(self._emit("response.function_call_arguments.done", **where,
                                     name=item["name"], arguments=item["arguments"]))
        events.append(self._emit("response.output_item.done", output_index=output_index,
                                 item=copy.deepcopy(item)))
        return events

    def _replay_part(self, item_id: str, output_index: int, content_index: int, part: dict
                     ) -> list[dict]:
        where = {"item_id": item_id, "output_index": output_index,
                 "content_index": content_index}
        kind = part.get("type")
        events = [self._emit("response.content_part.added", **where, part=_empty_part(kind))]
        if kind == "output_text":
            events.append(self._emit("response.output_text.delta", **where, delta=part["text"],
                                     logprobs=[]))
            events.append(self._emit("response.output_text.done", **where, text=part["text"],
                                     logprobs=[]))
        else:
            events.append(self._emit("response.refusal.delta", **where, delta=part["refusal"]))
            events.append(self._emit("response.refusal.done", **where,
                                     refusal=part["refusal"]))
        events.append(self._emit("response.content_part.done", **where, part=dict(part)))
        return events


def replay(response: dict) -> list[dict]:
    """Every event of a stored response's stream, sequence numbers from 0: created and
    in_progress (with no output yet), each output item, then the terminal event (none for a
    response still queued or in progress)."""
    writer = EventWriter()
    start = {**response, "status": "in_progress", "output": [], "completed_at": None,
             "error": None, "incomplete_details": None}
    start.pop("usage", None)
    events = writer.created(start) + writer.in_progress(start)
    for item in response.get("output") or []:
        events += writer.replay_item(item)
    kind = TERMINAL.get(response.get("status", ""))
    if kind is not None:
        events.append(writer._emit(kind, response=copy.deepcopy(response)))
    return events
