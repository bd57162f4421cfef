"""Fakes for end-to-end tests: a scripted OpenAI-compatible upstream and a rule-based model."""

from .scripted_model import MEMORY_TOOLS, Reply, message_text, offered_tools, scripted_model
from .upstream import (
    DroppedConnection,
    FakeUpstream,
    Fault,
    RecordedRequest,
    count_tokens,
    embed,
    error_body,
    prompt_tokens,
    with_usage,
)

__all__ = [
    "MEMORY_TOOLS",
    "DroppedConnection",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "Reply",
    "count_tokens",
    "embed",
    "error_body",
    "message_text",
    "offered_tools",
    "prompt_tokens",
    "scripted_model",
    "with_usage",
]
