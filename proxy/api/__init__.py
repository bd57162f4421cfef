"""The HTTP layer (Starlette): routes, middleware (request ids, CORS, authentication, rate
limits), the one exception handler (`errors.py`), chat completions and pass-through, the
agents REST API and its OpenAPI document. Thin: it parses, authenticates and validates, then
hands a stateful turn to `proxy.turn`."""
