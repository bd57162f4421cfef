"""The client's `tool_choice` on the memory path (issue #17, docs/memory.md "Tool choice").

A client's `tool_choice` speaks of the client's tools. memproxy adds its memory tools to the
same request, so forwarding the choice unchanged would be wrong both ways: a forced function
would forbid memory for the whole turn, and with `required` a memory call would "satisfy" it,
after which the loop's last step (`tool_choice: "none"`) could answer in text. So:

- `auto`, `none` or nothing: forwarded as they are; the last allowed step is sent with
  `tool_choice: "none"` so that the model answers in text.
- `required`, or a forced function: every step but the last is sent with `required` (a memory
  call satisfies the upstream and the loop continues; a forced function narrows the client's
  tools to that one); the last allowed step offers only the client's tools with the client's
  own choice, so the model must produce what the client asked for. A turn that ends without it
  is the error `tool_choice_not_satisfied` (502), never silent text.

Legacy `functions` / `function_call` are client tools too: `legacy_to_tools` rewrites them as
`tools` / `tool_choice` for the upstream, and the answer goes back as `function_call`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UpstreamError

__all__ = ["ToolChoice", "legacy_reply", "legacy_to_tools", "not_satisfied"]


def legacy_to_tools(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with `functions` / `function_call` rewritten as `tools` / `tool_choice`, and
    whether it used them (its answer then goes back as `function_call`). A body that also has
    `tools` keeps them and only drops the legacy keys' duplicates."""
    functions = body.get("functions")
    if not isinstance(functions, list) or not functions:
        return body, False
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    if not out.get("tools"):
        out["tools"] = [{"type": "function", "function": f} for f in functions
                        if isinstance(f, dict)]
    choice = body.get("function_call")
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice in ("auto", "none") and "tool_choice" not in out:
        out["tool_choice"] = choice
    return out, True


def legacy_reply(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message with tool calls in the legacy shape: the first call as
    `function_call` (the legacy API has one call per message)."""
    calls = message.get("tool_calls")
    out = {k: v for k, v in message.items() if k != "tool_calls"}
    if calls:
        fn = calls[0].get("function") or {}
        out["function_call"] = {"name": fn.get("name", ""), "arguments": fn.get("arguments", "")}
    return out


@dataclass(frozen=True)
class ToolChoice:
    """The client's `tool_choice`, and what each step sends in its stead."""

    original: Any  # as the client sent it (absent: None)
    required: bool  # the turn must end with a call of a client tool
    forced: str | None  # the one client function it must call

    @classmethod
    def of(cls, value: Any) -> ToolChoice:
        if value == "required":
            return cls(value, True, None)
        if isinstance(value, dict):
            name = (value.get("function") or {}).get("name")
            if isinstance(name, str) and name:
                return cls(value, True, name)
        return cls(value, False, None)

    def step(self, tools: list[dict[str, Any]], client_names: frozenset[str], *,
             last: bool) -> tuple[list[dict[str, Any]], Any]:
        """The tools to offer and the `tool_choice` to send (None: leave it out)."""
        if not self.required:
            return tools, "none" if last else self.original
        offered = [t for t in tools if self._allowed(_tool_name(t), client_names, last)]
        return offered, self.original if last else "required"

    def _allowed(self, name: str, client_names: frozenset[str], last: bool) -> bool:
        if name not in client_names:
            return not last  # a memory tool: allowed before the last step
        return self.forced is None or name == self.forced

    def satisfied(self, client_calls: list[dict[str, Any]]) -> bool:
        return not self.required or bool(client_calls)


def not_satisfied(max_steps: int, choice: ToolChoice) -> UpstreamError:
    """The model never called what the client's `tool_choice` required."""
    wanted = f"the function {choice.forced!r}" if choice.forced else "one of the request's tools"
    return UpstreamError(
        502,
        f"the model did not call {wanted} within {max_steps} steps, as tool_choice requires",
        code="tool_choice_not_satisfied",
        retryable=False,
    )


def _tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function")
    return str(fn.get("name") or "") if isinstance(fn, dict) else ""
