"""Validate objects against the official OpenAI description, vendored in `tests/openai/`.

The file is `tests/openai/openapi.json` (its origin and licence: `tests/openai/README.md`),
or wherever the environment variable `MEMPROXY_OPENAI_SPEC` points. It is loaded once and
registered in a `referencing.Registry`; one Draft 2020-12 validator per schema is built
lazily and cached. Every `validate_*` function raises `AssertionError` naming the JSON path
and the reason.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:openai:openapi"
DEFAULT_SPEC = Path(__file__).resolve().parent / "openai" / "openapi.json"


def spec_path() -> Path:
    """Where the OpenAI description is read from."""
    return Path(os.environ.get("MEMPROXY_OPENAI_SPEC") or DEFAULT_SPEC)


@cache
def _registry() -> Registry:
    path = spec_path()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"OpenAI description not found at {path}; set MEMPROXY_OPENAI_SPEC"
        ) from exc
    resource = Resource(contents=document, specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator:
    """The cached validator for `components.schemas.<schema_name>`."""
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry())


def _describe(error: ValidationError) -> str:
    reason = error.message
    if len(reason) > 400:
        reason = reason[:400] + "…"
    return f"at {error.json_path}: {reason}"


def validate(schema_name: str, obj: Any) -> None:
    """Raise AssertionError unless `obj` validates against the named schema."""
    errors = list(validator(schema_name).iter_errors(obj))
    if not errors:
        return
    best = best_match(errors)
    others = [_describe(e) for e in errors if e is not best][:4]
    lines = [f"{schema_name} does not validate {_describe(best)}"]
    lines += [f"  also {line}" for line in others]
    raise AssertionError("\n".join(lines))


def validate_chat_completion(obj: Any) -> None:
    """A non-streaming `chat.completion`."""
    validate("CreateChatCompletionResponse", obj)


def validate_chat_chunk(obj: Any) -> None:
    """One `chat.completion.chunk` (the JSON of one SSE `data:` line)."""
    validate("CreateChatCompletionStreamResponse", obj)


def validate_error(obj: Any) -> None:
    """An error body `{"error": {"message", "type", "param", "code"}}`."""
    validate("ErrorResponse", obj)


def validate_models(obj: Any) -> None:
    """The `GET /v1/models` list."""
    validate("ListModelsResponse", obj)


def validate_embeddings(obj: Any) -> None:
    """A `POST /v1/embeddings` response (float encoding; base64 strings violate the spec)."""
    validate("CreateEmbeddingResponse", obj)


def validate_response(obj: Any) -> None:
    """A Responses API `Response` object (`POST /v1/responses`, `GET /v1/responses/{id}`)."""
    validate("Response", obj)


def validate_response_event(event: Any) -> None:
    """One Responses streaming event (the JSON of one SSE `data:` line)."""
    validate("ResponseStreamEvent", event)
