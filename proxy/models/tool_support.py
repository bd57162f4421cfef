"""Whether a model can be sent `tools`: configured, or learned from the upstream's refusal.

Many local models cannot call tools, and their servers refuse a request that offers any:
Ollama answers 400 `registry.ollama.ai/library/X does not support tools`, vLLM without
`--enable-auto-tool-choice` answers `"auto" tool choice requires --enable-auto-tool-choice and
--tool-call-parser to be set`, older llama.cpp servers without `--jinja` answer
`tools param requires --jinja flag`. memproxy recognises these messages, serves the turn again
at once without tools (the client never sees the refusal) and remembers the model (the catalog
persists it in the model stats store), so later turns never offer tools to it: such a model
gets its memory in the prompt only (core memory blocks and automatic recall, docs/memory.md).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from ..config import Settings
from ..errors import MemproxyError

# Phrases of the real refusals (Ollama, vLLM, llama.cpp, LM Studio and gateways in front of
# them); matched case-insensitively anywhere in the upstream's error message.
_REFUSALS = re.compile(
    r"does not support tools"  # Ollama: "registry.ollama.ai/library/gemma3:4b does not support tools"
    r"|tool choice requires --enable-auto-tool-choice"  # vLLM
    r"|tools param requires --jinja"  # llama.cpp without --jinja
    r"|does not support (?:tool|function)[ _-]?call"  # "model X does not support tool calling"
    r"|(?:tool|function)[ _-]?call(?:ing|s)? (?:is |are )?not supported"
    r"|tools are not supported",
    re.IGNORECASE,
)

# A refusal comes as a client error; llama.cpp sends it as a 500 (`server_error`).
_STATUSES = frozenset({400, 404, 422, 500, 501})

TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")


def says_no_tools(message: str | None) -> bool:
    """Whether an upstream error message says the model cannot take tools."""
    return bool(message) and _REFUSALS.search(message or "") is not None


def rejects_tools(exc: BaseException) -> bool:
    """Whether `exc` is the upstream refusing a request because it offered tools."""
    return (isinstance(exc, MemproxyError) and exc.status in _STATUSES
            and says_no_tools(exc.message))


def without_tools(body: dict[str, Any], keep: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """`body` offering only the tools in `keep` (none: no tool fields at all, since servers
    that refuse tools may also refuse `tool_choice`)."""
    trimmed = {k: v for k, v in body.items() if k not in TOOL_FIELDS}
    if keep:
        trimmed["tools"] = keep
        for key in ("tool_choice", "parallel_tool_calls"):
            if key in body:
                trimmed[key] = body[key]
    return trimmed


def configured_tools(model: str, settings: Settings) -> bool | None:
    """`[models."x"] tools` for `model` (exact name first, then globs), or None when unset."""
    models = settings.models
    exact = models.get(model)
    if exact is not None and exact.tools is not None:
        return exact.tools
    lowered = model.lower()
    for pattern in sorted(models, key=lambda p: (p.count("*") + p.count("?"), -len(p))):
        entry = models[pattern]
        if entry.tools is not None and fnmatch.fnmatchcase(lowered, pattern.lower()):
            return entry.tools
    return None
