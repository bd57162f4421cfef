"""`GET /openapi.json`: the agents REST API as an OpenAPI 3.1 document.

Built once, on the first request, from the route table it is given (routes.py) and the pydantic
models' JSON schemas (request bodies in validation mode, responses in serialization mode), so
the document describes what the code accepts and answers. OpenAPI 3.1 schemas are JSON Schema
2020-12, which is what pydantic emits; clients and tests can validate against it directly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from .endpoints import Endpoint, PathParams, Schema
from .schemas import ErrorResponse

REF = "#/components/schemas/{model}"
JsonMode = Literal["validation", "serialization"]
_PATH_PARAM = re.compile(r"{(\w+)}")
ERROR_STATUSES = {
    "400": "Bad body or parameter (`param` names it)",
    "401": "Missing or invalid API key",
    "404": "Not found (also: another tenant's agent)",
    "409": "Conflict",
    "413": "Body too large",
}
OPENAPI_DOCUMENT: dict[str, Any] = {"type": "object", "description": "This document."}


def _schemas(endpoints: Sequence[Endpoint]) -> tuple[dict[tuple[type[BaseModel], JsonMode],
                                                         dict[str, Any]], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonMode], None] = {(ErrorResponse, "serialization"): None}
    for e in endpoints:
        for body in e.body:
            if isinstance(body, type):
                wanted[(body, "validation")] = None
        if isinstance(e.response, type):
            wanted[(e.response, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF)
    return dict(refs), top.get("$defs", {})


def _schema(refs: dict[Any, dict[str, Any]], schema: Schema, mode: JsonMode) -> dict[str, Any]:
    return refs[(schema, mode)] if isinstance(schema, type) else schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _content(e: Endpoint, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    content = {e.media_type: {"schema": _schema(refs, e.response, "serialization")}}
    if e.event_stream is not None:
        content["text/event-stream"] = {"schema": e.event_stream}
    return content


def _operation(e: Endpoint, refs: dict[Any, dict[str, Any]], path_params: PathParams
               ) -> dict[str, Any]:
    params = []
    for name in _PATH_PARAM.findall(e.path):
        description, schema = path_params[name]
        params.append({"name": name, "in": "path", "required": True,
                       "description": description, "schema": schema})
    params += [{"name": p.name, "in": "query", "required": False,
                "description": p.description, "schema": p.schema} for p in e.query]
    error = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {
        "operationId": e.handler.__name__, "summary": e.summary, "tags": [e.tag],
        "parameters": params,
        "responses": {str(e.status): {"description": e.summary, "content": _content(e, refs)},
                      **{status: error for status in ERROR_STATUSES}, "default": error},
    }
    if e.body:
        bodies = [_schema(refs, b, "validation") for b in e.body]
        schema = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
        op["requestBody"] = {"required": e.body_required, "content": _json(schema)}
    return op


def openapi_document(endpoints: Sequence[Endpoint], path_params: PathParams) -> dict[str, Any]:
    refs, components = _schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, refs, path_params)
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi_json", "summary": "This document", "tags": ["meta"],
        "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": _json(OPENAPI_DOCUMENT)}}}}
    error_ref = _schema(refs, ErrorResponse, "serialization")
    return {
        "openapi": "3.1.0",
        "info": {"title": "memproxy agents API", "version": __version__,
                 "description": "Every agent, block, transcript and passage of memproxy "
                                "(docs/api.md). Errors have OpenAI's shape."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {"Error": {"description": "An OpenAI-shaped error",
                                    "content": _json(error_ref)}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The same keys as the chat "
                                                          "endpoint."}},
        },
    }


def openapi_endpoint(endpoints: Sequence[Endpoint], path_params: PathParams
                     ) -> Callable[[Request], Awaitable[Response]]:
    """The `GET /openapi.json` handler of a route table: the document is the same for every
    caller, so it is built on the first request and kept."""
    document: dict[str, Any] | None = None

    async def openapi_json(request: Request) -> Response:
        nonlocal document
        if document is None:
            document = openapi_document(endpoints, path_params)
        return JSONResponse(document)

    return openapi_json
