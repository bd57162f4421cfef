"""A scripted upstream mode for models that cannot call tools (issue 17).

`refusing_tools(responder)` wraps a responder (default: the scripted model) so that any request
offering `tools` gets Ollama's 400 ("registry.ollama.ai/library/MODEL does not support tools",
in OpenAI's error shape as Ollama's `/v1` sends it). A request without tools is answered by the
responder, except "What is my name?", which a memory-less model answers from whatever the system
prompt says ("my name is X" in a recalled snippet counts as much as a `Name: X` block line), and
memproxy's fact extraction (core/facts.py), answered "Name: X" for "my name is X" in the user's
message, else "NONE" (with `extraction_fails`, a 400 instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.core.facts import EXTRACTION_PROMPT

from .faults import Fault
from .scripted_model import Reply, message_text, scripted_model

_NAME = re.compile(r"(?:my name is|Name:)\s+([A-Z][\w-]*)", re.IGNORECASE)


def ollama_refusal(model: str) -> Fault:
    """Ollama's answer to a request with tools for a model whose template has none."""
    return Fault.http(400, f"registry.ollama.ai/library/{model} does not support tools",
                      type="api_error")


def refusing_tools(responder: Callable[[dict], Reply | Fault] = scripted_model, *,
                   extraction_fails: bool = False) -> Callable[[dict], Reply | Fault]:
    def respond(body: dict) -> Reply | Fault:
        if body.get("tools"):
            return ollama_refusal(str(body.get("model", "")))
        messages = body.get("messages") or []
        if messages and message_text(messages[0]).startswith(EXTRACTION_PROMPT[:40]):
            if extraction_fails:
                return Fault.http(400, "extraction is broken today")
            said = _NAME.search(message_text(messages[-1]).split("User's message:")[-1])
            return Reply(content=f"Name: {said.group(1)}" if said else "NONE")
        last = message_text(messages[-1]) if messages else ""
        if last.strip() == "What is my name?":
            system = "\n".join(message_text(m) for m in messages if m.get("role") == "system")
            found = _NAME.search(system)
            return Reply(content=f"Your name is {found.group(1)}." if found
                         else "I don't know your name.")
        return responder(body)

    return respond
