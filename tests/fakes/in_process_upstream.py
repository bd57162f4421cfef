"""The upstream as `StatefulService` calls it, answered in-process: no HTTP, no sockets.

`InProcessUpstream` has what a turn and the model catalog use of `upstream.UpstreamClient`
(`chat`, `chat_stream`, `list_models`, and the `observer` attribute the service sets). Each chat
call is answered, in order, by the one-shot queue filled with `push(Reply | Exception)`, else by
`responder(body)` (default: the rule-based `scripted_model`, as the HTTP `FakeUpstream` does). A
pushed exception is raised by the call, as the real client raises `UpstreamError`.

Calls of the summarizer (recognised by its system prompt) are answered by `summarizer(body)`
and recorded apart in `summary_requests`, so that `requests` holds exactly the turn's own calls.
Usage reports the prompt as memproxy's tokenizer counts it (`proxy.tokens.count_prompt`), so
the learned calibration stays close to 1; `report_usage = False` leaves usage out, and the
calibration at exactly 1.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from proxy import tokens
from proxy.core.summary import SUMMARY_SYSTEM_PROMPT

from .scripted_model import Reply, message_text, scripted_model

CREATED = 1_700_000_000
SUMMARY_TEXT = "The user and the assistant talked about earlier things."


def is_summary_request(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and message_text(messages[0]) == SUMMARY_SYSTEM_PROMPT


class InProcessUpstream:
    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Reply] = scripted_model,
        *,
        summarizer: Callable[[dict[str, Any]], Reply] | None = None,
        models: tuple[str, ...] = (),
        report_usage: bool = True,
    ) -> None:
        self.responder = responder
        self.summarizer = summarizer or (lambda body: Reply(content=SUMMARY_TEXT))
        self.models = models
        self.report_usage = report_usage
        self.queue: deque[Reply | BaseException] = deque()
        self.requests: list[dict[str, Any]] = []  # the turn's calls, deep copies, in order
        self.summary_requests: list[dict[str, Any]] = []
        self.observer: Any = None  # set by StatefulService (upstream failures, circuits)

    def push(self, *answers: Reply | BaseException) -> None:
        """Answer the next chat calls with these, in order, before the responder."""
        self.queue.extend(answers)

    # --- what the service calls ----------------------------------------------------------
    async def chat(self, body: dict[str, Any], *, api_key: str | None,
                   route: Any = None) -> dict[str, Any]:
        reply = self._answer(body)
        n = len(self.requests) + len(self.summary_requests)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = _calls(reply, n)
        response = {
            "id": f"chatcmpl-up-{n}", "object": "chat.completion", "created": CREATED,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": reply.effective_finish_reason}],
        }
        usage = self._usage(body, reply)
        return {**response, "usage": usage} if usage else response

    async def chat_stream(self, body: dict[str, Any], *, api_key: str | None,
                          route: Any = None) -> AsyncIterator[dict[str, Any]]:
        reply = self._answer(body)
        n = len(self.requests)
        base = {"id": f"chatcmpl-up-{n}", "object": "chat.completion.chunk",
                "created": CREATED, "model": body.get("model", "")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        text = reply.content or ""
        for i in range(0, len(text), 4):
            yield chunk({"content": text[i:i + 4]})
        for i, call in enumerate(_calls(reply, n)):
            fn = call["function"]
            yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                         "function": {"name": fn["name"], "arguments": ""}}]})
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": fn["arguments"]}}]})
        yield chunk({}, reply.effective_finish_reason)
        usage = self._usage(body, reply)
        if usage and (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage}

    async def list_models(self, api_key: str | None = None) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}

    # --- answering ------------------------------------------------------------------------
    def _answer(self, body: dict[str, Any]) -> Reply:
        if is_summary_request(body):
            self.summary_requests.append(copy.deepcopy(body))
            return self.summarizer(body)
        self.requests.append(copy.deepcopy(body))
        answer = self.queue.popleft() if self.queue else self.responder(body)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, int] | None:
        if reply.usage is not None:
            return reply.usage
        if not self.report_usage:
            return None
        model = str(body.get("model", ""))
        prompt = tokens.count_prompt(body.get("messages") or [], body.get("tools"), model)
        completion = tokens.count_text(reply.content or "", model) + 1
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}


def _calls(reply: Reply, n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"call_{n}_{i}", "type": "function",
         "function": {"name": name,
                      "arguments": args if isinstance(args, str) else json.dumps(args)}}
        for i, (name, args) in enumerate(reply.tool_calls)
    ]
