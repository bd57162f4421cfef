"""The 400 a turn gets when its prompt cannot fit the model's window even with every older
message paged out, and the arithmetic that explains it.

What is left by then cannot be paged out: the client's tool schemas, memproxy's part (its
instructions, the client's system prompt, the memory blocks and the memory tools' schemas), the
reserve for the answer and this turn's own messages. The error names each part against the
window and the largest one first in its advice, because the usual culprit is not the user's
message: a chat UI such as Open WebUI sends dozens of built-in tools (36, about 6.4k tokens)
with every request, which alone fill most of an 8k model. Blaming the input would send the
user looking in the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProxyError


@dataclass(frozen=True)
class ContextCost:
    """Calibrated tokens of a prompt that does not fit, by what the user can change."""

    model: str
    window: int
    client_tools: int  # the client's own tool schemas
    client_tool_count: int
    memory: int  # instructions, the client's system prompt, blocks, summary, memory tools
    reserve: int  # kept free for the answer
    messages: int  # this turn's messages (the older ones are already paged out)

    @property
    def total(self) -> int:
        return self.client_tools + self.memory + self.reserve + self.messages

    def share(self, part: int) -> int:
        """`part` as a percentage of the window."""
        return round(100 * part / self.window) if self.window else 100


def _advice(cost: ContextCost) -> tuple[str, str]:
    """What to change, the largest part first, and the request field to blame."""
    parts = {"tools": cost.client_tools, "memory": cost.memory, "reserve": cost.reserve,
             "messages": cost.messages}
    largest = max(parts, key=lambda name: parts[name])
    window_hint = (f"or use a model with a larger window and tell memproxy its size with"
                   f" [models.\"{cost.model}\"] context_window in the config (it uses"
                   f" {cost.window} now).")
    if largest == "tools":
        return (f"The client's tools alone take {cost.share(cost.client_tools)}% of the window:"
                " send fewer tools (in a chat UI, turn off the built-in tools it sends with"
                " every request for this model, e.g. Open WebUI's builtin tools), "
                + window_hint, "tools")
    if largest == "reserve":
        return ("Ask for a smaller max_tokens (or lower [memory] reserve_output_tokens), "
                + window_hint, "max_tokens")
    if largest == "memory":
        return ("Shorten the system prompt or the memory blocks, " + window_hint, "messages")
    return "Send a shorter message, " + window_hint, "messages"


def context_length_error(cost: ContextCost) -> ProxyError:
    """400 `context_length_exceeded` that says where the window went."""
    tools = (f"{cost.client_tools} for the client's {cost.client_tool_count} tool"
             f" definition{'s' if cost.client_tool_count != 1 else ''}"
             if cost.client_tool_count else "no client tools")
    advice, param = _advice(cost)
    return ProxyError(
        400,
        f"This model's maximum context length is {cost.window} tokens, but this turn needs"
        f" about {cost.total} even with every older message paged out: {tools},"
        f" {cost.memory} for memory (memproxy's instructions, the system prompt, the memory"
        f" blocks and the memory tools), {cost.reserve} reserved for the answer and"
        f" {cost.messages} for this turn's messages. {advice}",
        param=param,
        code="context_length_exceeded",
    )
