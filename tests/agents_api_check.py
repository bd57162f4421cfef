"""Validate agents-REST responses against the OpenAPI document the server itself serves.

`AgentsApi(proxy, key)` is an httpx client for one API key; every call returns the response
after checking its body against `GET /openapi.json`: the operation is found from the request's
method and path, the schema from the response's status (an undeclared status falls back to the
document's error response, so an unexpected 2xx fails). Paths that match no operation (hostile
ids with encoded slashes, say) must be OpenAI-shaped errors.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

URI = "urn:memproxy:agents-api"


def _pattern(template: str) -> re.Pattern[str]:
    parts = ["[^/]+" if re.fullmatch(r"{\w+}", part) else re.escape(part)
             for part in template.split("/")]
    return re.compile("^" + "/".join(parts) + "$")


def _escape(path: str) -> str:
    """A JSON pointer token."""
    return path.replace("~", "~0").replace("/", "~1")


ERROR_POINTER = "/components/responses/Error/content/application~1json/schema"


class ApiSpec:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry = Registry().with_resource(
            URI, Resource(contents=document, specification=DRAFT202012))
        self.operations = [(method.upper(), _pattern(path), path)
                           for path, methods in document["paths"].items() for method in methods]
        self._validators: dict[str, Draft202012Validator] = {}

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            self._validators[pointer] = Draft202012Validator({"$ref": f"{URI}#{pointer}"},
                                                             registry=self.registry)
        return self._validators[pointer]

    def template(self, method: str, path: str) -> str | None:
        """The documented path template of a request (literal segments win over ids)."""
        found = [t for m, p, t in self.operations if m == method and p.match(path)]
        return min(found, key=lambda t: t.count("{")) if found else None

    def schema_pointer(self, method: str, path: str, status: int) -> str:
        template = self.template(method, path)
        if template is None:
            assert status >= 400, f"{method} {path} answered {status} but is not documented"
            return ERROR_POINTER
        responses = self.document["paths"][template][method.lower()]["responses"]
        key = str(status) if str(status) in responses else "default"
        if "$ref" in responses[key]:
            return ERROR_POINTER
        return (f"/paths/{_escape(template)}/{method.lower()}/responses/{key}"
                "/content/application~1json/schema")

    def check(self, response: httpx.Response) -> Any:
        """The response's JSON, after validating it against the served document."""
        request = response.request
        pointer = self.schema_pointer(request.method, request.url.path, response.status_code)
        body = response.json()
        errors = list(self._validator(pointer).iter_errors(body))
        if errors:
            best = best_match(errors)
            raise AssertionError(f"{request.method} {request.url.path} -> "
                                 f"{response.status_code}: {best.json_path}: "
                                 f"{best.message[:300]}")
        return body


class AgentsApi:
    """An httpx client on a memproxy server for one key (None: no Authorization header)."""

    def __init__(self, base_url: str, spec: ApiSpec, key: str | None = None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30.0)
        self.spec = spec

    @classmethod
    def connect(cls, base_url: str, key: str | None = None) -> AgentsApi:
        document = httpx.get(f"{base_url}/openapi.json", timeout=30.0).json()
        return cls(base_url, ApiSpec(document), key)

    def as_key(self, key: str | None) -> AgentsApi:
        return AgentsApi(str(self.http.base_url).rstrip("/"), self.spec, key)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.http.request(method, path, **kw)
        self.spec.check(response)
        return response

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)
