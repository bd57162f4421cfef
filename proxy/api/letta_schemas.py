"""Pydantic models of the Letta-shaped agent messages endpoint (docs/agents-as-a-service.md):
the request body, validated strictly like the rest of the agents API, and the `LettaResponse`
it answers with, described for `GET /openapi.json` (the handler writes plain dicts built by
core/letta_messages.py; the tests validate them against this description).

Letta's request fields memproxy has no use for are accepted and ignored by name (listed in
`LettaMessagesRequest`), so a Letta client's body is never refused for them; any other unknown
field is a 400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .schemas import _Body, _Out


class LettaTextPart(_Body):
    type: Literal["text"]
    text: str


class LettaMessageCreate(_Body):
    role: Literal["user", "system"] = Field(
        description="`system` text joins the turn's system prompt (not stored), as on the chat "
                    "endpoint.")
    content: str | list[LettaTextPart]
    otid: str | None = Field(None, min_length=1, max_length=200,
                             description="The client's id for this message: a retry with the "
                                         "same otid returns the stored turn again.")
    name: str | None = None
    type: Literal["message"] | None = None
    sender_id: str | None = Field(None, description="Accepted and ignored.")
    batch_item_id: str | None = Field(None, description="Accepted and ignored.")
    group_id: str | None = Field(None, description="Accepted and ignored.")


class LettaMessagesRequest(_Body):
    messages: list[LettaMessageCreate] | None = Field(
        None, min_length=1, description="The new messages; or `input`.")
    input: str | list[LettaTextPart] | None = Field(
        None, description="Letta's shorthand for one user message (with no `messages`).")
    model: str | None = Field(None, min_length=1,
                              description="Default: the agent's `settings.model`, else the "
                                          "model of the conversation's last turn.")
    override_model: str | None = Field(None, min_length=1, description="Letta's name for "
                                       "`model` (this request only, as `model` is).")
    override_system: str | None = Field(None, description="System text for this turn only.")
    conversation_id: str | None = Field(None, description="Default `default`.")
    max_steps: int | None = Field(None, ge=1, description="At most `[agent] max_steps`.")
    streaming: bool = Field(False, description="Answer as server-sent events (as "
                                               "`/messages/stream` does).")
    use_assistant_message: bool = True
    stream_tokens: bool | None = Field(
        None, description="With a stream: the model's text as `assistant_message` chunks that "
                          "share the stored message's id.")
    include_return_message_types: list[Literal[
        "reasoning_message", "tool_call_message", "tool_return_message",
        "assistant_message"]] | None = None
    client_tools: list[dict[str, Any]] | None = Field(
        None, max_length=0, description="Client-side tools are not supported (empty or null).")
    # Letta's, accepted and ignored: whole messages are sent, no background runs, no logprobs
    assistant_message_tool_name: str | None = None
    assistant_message_tool_kwarg: str | None = None
    enable_thinking: str | bool | None = None
    include_pings: bool | None = None
    background: bool | None = None
    client_skills: list[dict[str, Any]] | None = None
    include_compaction_messages: bool | None = None
    return_logprobs: bool | None = None
    return_token_ids: bool | None = None
    top_logprobs: int | None = None


class _Message(_Out):
    id: str
    date: str
    otid: str
    run_id: str | None


class ReasoningMessage(_Message):
    message_type: Literal["reasoning_message"]
    reasoning: str
    source: Literal["non_reasoner_model"]


class LettaToolCall(_Out):
    name: str
    arguments: str
    tool_call_id: str


class ToolCallMessage(_Message):
    message_type: Literal["tool_call_message"]
    tool_call: LettaToolCall


class ToolReturnMessage(_Message):
    message_type: Literal["tool_return_message"]
    name: str | None
    tool_return: str
    status: Literal["success", "error"]
    tool_call_id: str
    stdout: list[str] | None
    stderr: list[str] | None


class AssistantMessage(_Message):
    message_type: Literal["assistant_message"]
    content: str


LettaMessage = Annotated[ReasoningMessage | ToolCallMessage | ToolReturnMessage
                         | AssistantMessage, Field(discriminator="message_type")]


class LettaStopReason(_Out):
    message_type: Literal["stop_reason"]
    stop_reason: Literal["end_turn", "max_steps", "requires_approval", "error", "cancelled"]


class LettaUsage(_Out):
    message_type: Literal["usage_statistics"]
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    step_count: int


class LettaResponse(_Out):
    messages: list[LettaMessage]
    stop_reason: LettaStopReason
    usage: LettaUsage


# One server-sent event, as OpenAPI 3.2's `itemSchema` and schemathesis read a
# text/event-stream schema: its `data` is a message, the stop_reason or usage_statistics object
# (JSON text), or `[DONE]`.
LETTA_STREAM = {
    "title": "LettaStreamEvent", "type": "object",
    "description": "text/event-stream: `data: {message}` per message as each step "
                   "finishes, then the stop_reason and usage_statistics objects, then "
                   "`data: [DONE]`; an error after the first step is `data: {\"error\": "
                   "...}` and a stop_reason `error`.",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                   "id": {"type": "string"}, "retry": {"type": "integer"}},
    "required": ["data"]}
