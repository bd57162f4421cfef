"""`memproxy chat AGENT`: talk to an agent in the terminal, through the proxy's chat endpoint.

Each line is sent as one new user message (the SDK style: memproxy keeps the history), with the
agent and conversation in headers, and the answer is streamed as it arrives. The official
`openai` package is used when it is installed, else plain httpx and SSE parsing. In local mode
the app runs in-process, calling the configured upstream. `/exit` or end of input (Ctrl-D) ends
the session. At a terminal the line is edited with readline and kept in a history file
(`line_editing.py`); piped input is read as it is, with no prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from .client import LOCAL_BASE_URL, TIMEOUT, Api, ApiError, error_message
from .common import CliError
from .line_editing import HISTORY_ENV, LineEditor, history_path
from .transport import streaming_transport

MODEL_ENV = "MEMPROXY_MODEL"
EXIT_COMMANDS = ("/exit", "/quit")


async def read_line(prompt: str) -> str | None:
    """One line from stdin (None at end of input), read on a daemon thread so the event loop
    keeps serving the in-process app meanwhile and Ctrl-C never waits for the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def deliver(value: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value: str | None = input(prompt)
            error = None
        except EOFError:
            value, error = None, None
        except BaseException as exc:  # delivered to the awaiting coroutine
            value, error = None, exc
        loop.call_soon_threadsafe(deliver, value, error)

    threading.Thread(target=run, name="memproxy-chat-input", daemon=True).start()
    return await future


async def default_model(api: Api) -> str:
    """The first model the upstream lists, when neither --model nor $MEMPROXY_MODEL is set."""
    models = await api.get("/v1/models")
    for model in (models or {}).get("data") or []:
        if isinstance(model, dict) and model.get("id"):
            return str(model["id"])
    raise CliError(f"the upstream lists no models: pass --model or set ${MODEL_ENV}")


def _openai_module() -> Any | None:
    try:
        return importlib.import_module("openai")
    except ImportError:
        return None


def _openai_error(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", None) or exc)


class OpenAIStreamer:
    """Streams answers with the official SDK (pointed at the in-process app in local mode)."""

    def __init__(self, openai: Any, api: Api) -> None:
        self.openai = openai
        kwargs: dict[str, Any] = {"api_key": api.key or "unused", "max_retries": 0,
                                  "timeout": TIMEOUT.read}
        if api.local:
            # The SDK may use its own httpx-compatible package: build the transport for it.
            base = next(c for c in type.mro(openai.DefaultAsyncHttpxClient)
                        if c.__name__ == "AsyncClient")
            module = importlib.import_module(base.__module__.split(".")[0])
            kwargs["http_client"] = module.AsyncClient(
                transport=streaming_transport(api.app, module), timeout=TIMEOUT.read)
            kwargs["base_url"] = f"{LOCAL_BASE_URL}/v1"
        else:
            kwargs["base_url"] = f"{api.base_url}/v1"
        self.client = openai.AsyncOpenAI(**kwargs)

    async def stream(self, model: str, text: str, headers: dict[str, str]
                     ) -> AsyncIterator[str]:
        try:
            response = await self.client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}], stream=True,
                extra_headers=headers,
            )
            async for chunk in response:
                for choice in chunk.choices or []:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except self.openai.APIConnectionError as exc:
            raise CliError(f"cannot reach memproxy: {_openai_error(exc)}") from exc
        except self.openai.APIError as exc:
            raise CliError(_openai_error(exc)) from exc

    async def aclose(self) -> None:
        await self.client.close()


class HttpxStreamer:
    """Streams answers with plain httpx, parsing the SSE events itself."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def stream(self, model: str, text: str, headers: dict[str, str]
                     ) -> AsyncIterator[str]:
        body = {"model": model, "messages": [{"role": "user", "content": text}],
                "stream": True}
        import httpx

        try:
            async with self.api.http.stream("POST", "/v1/chat/completions", json=body,
                                            headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    message, code = error_message(response)
                    raise ApiError(message, response.status_code, code)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if isinstance(event.get("error"), dict):
                        raise CliError(str(event["error"].get("message") or "stream failed"))
                    for choice in event.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            yield content
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach memproxy at {self.api.base_url}: {exc}") from exc

    async def aclose(self) -> None:
        return None


async def cmd_chat(api: Api, args: argparse.Namespace) -> int:
    if args.tenant:
        raise CliError("chat talks as the API key's tenant; --tenant does not apply", code=2)
    model = args.model or os.environ.get(MODEL_ENV) or await default_model(api)
    headers = {"X-Agent-Id": args.agent}
    if args.conversation:
        headers["X-Conversation-Id"] = args.conversation
    openai = None if args.no_sdk else _openai_module()
    streamer = OpenAIStreamer(openai, api) if openai is not None else HttpxStreamer(api)
    interactive = sys.stdin.isatty()
    editor = LineEditor.start(history_path(args.history, args.no_history))
    # The prompt goes where input() writes it (stdout) only at a terminal: `chat a > log`
    # keeps the answers alone in the file.
    prompt = "you> " if interactive and sys.stdout.isatty() else ""
    if interactive:
        print(f"chatting with {args.agent} ({model}); /exit or Ctrl-D to leave", file=sys.stderr)
    failures = 0
    try:
        while True:
            if interactive and not prompt:
                print("you> ", end="", file=sys.stderr, flush=True)
            line = await read_line(prompt)
            if line is None:
                if interactive:
                    print(file=sys.stderr)
                break
            if editor is not None:
                editor.remember(line)
            text = line.strip()
            if not text:
                continue
            if text in EXIT_COMMANDS:
                break
            written = False
            try:
                async for piece in streamer.stream(model, text, headers):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    written = True
            except CliError as exc:
                failures += 1
                if written:  # end the cut-off answer's line before the error
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                print(f"memproxy: {exc.message}", file=sys.stderr)
                continue
            sys.stdout.write("\n")
            sys.stdout.flush()
    finally:
        if editor is not None:
            editor.close()
        await streamer.aclose()
    return 1 if failures else 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser) -> None:
    chat = sub.add_parser(
        "chat", parents=[connection], help="chat with an agent in the terminal",
        description="Chat with AGENT through memproxy's chat endpoint, streaming the answers. "
        "Each line you type is one message; /exit or Ctrl-D ends. At a terminal the line is "
        "edited with readline (arrow keys, Ctrl-R) and kept in a history file. Reads stdin, so "
        "`memproxy chat a < questions.txt` works too. In local mode the app runs in this "
        "process and calls the configured upstream.",
    )
    chat.add_argument("agent", help="agent id (created on first use)")
    chat.add_argument("--conversation", "-c", help="conversation id (default: 'default')")
    chat.add_argument("--model", "-m",
                      help=f"model name (default ${MODEL_ENV}, else the upstream's first)")
    chat.add_argument("--upstream-url", help="OpenAI-compatible base URL (local mode)")
    chat.add_argument("--no-sdk", action="store_true",
                      help="use plain httpx even when the openai package is installed")
    history = chat.add_mutually_exclusive_group()
    history.add_argument("--history", metavar="FILE",
                         help=f"the history file (default ${HISTORY_ENV}, else "
                         "$XDG_DATA_HOME/memproxy/chat_history)")
    history.add_argument("--no-history", action="store_true",
                         help="keep no history file this session")
    chat.set_defaults(api_func=cmd_chat, api_upstream=True, api_streaming=True)
