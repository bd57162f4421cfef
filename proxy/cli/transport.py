"""An httpx transport that runs an ASGI app in-process and streams its response.

`httpx.ASGITransport` collects the whole response body before returning it, which is right for
the JSON commands but turns a streamed chat answer into one late block. `memproxy chat` in local
mode uses this transport instead: the app runs as a task and each body chunk it sends reaches the
caller as it is produced. Closing the response early (Ctrl-C, an error) tells the app the client
disconnected and waits for it to finish, so a turn is never left half-run by the transport.

`streaming_transport(app, module)` builds it for `httpx` or for an API-compatible fork of it (the
`openai` package may bring its own, e.g. `httpx2`), so the SDK can be pointed at the app too.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]],
     Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
_END = object()
CLOSE_TIMEOUT_S = 30.0


class _QueueStream:
    """The response body: chunks from the app's `send`, until the end marker."""

    def __init__(self, queue: asyncio.Queue[object], task: asyncio.Task[None],
                 disconnected: asyncio.Event) -> None:
        self._queue = queue
        self._task = task
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        self._disconnected.set()
        if self._task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def _handle(module: types.ModuleType, stream_class: type, app: ASGIApp,
                  request: Any) -> Any:
    body = await request.aread()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
        "scheme": request.url.scheme,
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "server": (request.url.host, request.url.port),
        "client": ("127.0.0.1", 0),
        "root_path": "",
    }
    queue: asyncio.Queue[object] = asyncio.Queue()
    started = asyncio.Event()
    disconnected = asyncio.Event()
    response: dict[str, Any] = {}
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
            response["headers"] = message.get("headers", [])
            started.set()
        elif message["type"] == "http.response.body":
            if disconnected.is_set():
                raise OSError("the client closed the response")
            chunk = message.get("body", b"")
            if chunk and request.method != "HEAD":
                queue.put_nowait(bytes(chunk))
            if not message.get("more_body", False):
                queue.put_nowait(_END)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:  # handed to the reader, raised where it reads
            if "status" in response:
                queue.put_nowait(exc)
            else:
                response["error"] = exc
        finally:
            started.set()
            queue.put_nowait(_END)

    task = asyncio.create_task(run())
    await started.wait()
    if "status" not in response:
        await task
        raise response.get("error") or RuntimeError("the app sent no response")
    return module.Response(
        response["status"],
        headers=response["headers"],
        stream=stream_class(queue, task, disconnected),
    )


_CLASSES: dict[str, type] = {}


def streaming_transport(app: ASGIApp, module: types.ModuleType = httpx) -> Any:
    """A `module.AsyncBaseTransport` that streams `app`'s responses (see the module doc)."""
    cls = _CLASSES.get(module.__name__)
    if cls is None:
        stream_class = type("QueueStream", (_QueueStream, module.AsyncByteStream), {})

        async def handle_async_request(self: Any, request: Any) -> Any:
            return await _handle(module, stream_class, self.app, request)

        def init(self: Any, app: ASGIApp) -> None:
            self.app = app

        cls = type("StreamingASGITransport", (module.AsyncBaseTransport,),
                   {"__init__": init, "handle_async_request": handle_async_request})
        _CLASSES[module.__name__] = cls
    return cls(app)
