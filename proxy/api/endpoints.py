"""One agents-REST endpoint as data: method, path, handler and what it takes and answers.

Its own module so that the route table (routes.py), which builds the Starlette routes, and the
OpenAPI document (openapi.py), which describes them, both depend on it and not on each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

Schema = type[BaseModel] | dict[str, Any]  # a model, or a JSON schema written out


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    response: Schema
    status: int = 200
    body: tuple[Schema, ...] = ()  # several: any of them
    body_required: bool = True
    query: tuple[Param, ...] = ()
    tag: str = "agents"
    media_type: str = "application/json"  # of the `status` answer
    event_stream: dict[str, Any] | None = None  # also answers text/event-stream, so described


PathParams = dict[str, tuple[str, dict[str, Any]]]  # name → (description, JSON schema)
