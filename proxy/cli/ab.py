"""`memproxy ab SCRIPT`: the same multi-session conversation with memory and without (#6.5).

The script (TOML or JSON) lists sessions, each a list of user messages; typically the first
sessions tell facts and a later one asks about them. It is replayed twice through the chat
endpoint, the way a stateless app talks: within a session the app resends the session's history,
across sessions it starts over.

- **with memory**: a fresh agent per run (`X-Agent-Id`), each session its own conversation
  (`X-Conversation-Id`), so anything carried across sessions comes from memproxy's memory;
- **raw**: `X-Memory: off`, the plain model.

Both answers are printed side by side per turn with prompt tokens, latency and cost, then totals.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import time
import tomllib
from dataclasses import dataclass
from typing import Any

import httpx

from .ab_report import Run, Turn, price_for, render
from .chat import MODEL_ENV, default_model
from .client import Api, error_message
from .common import CliError, positive_int, print_json


@dataclass
class Script:
    title: str
    sessions: list[list[str]]
    system: str | None = None
    model: str | None = None


def parse_script(data: Any, source: str) -> Script:
    """Validate a decoded script; errors name the offending field."""
    if not isinstance(data, dict):
        raise CliError(f"{source}: a script is a table with `sessions`")
    sessions = data.get("sessions")
    if not isinstance(sessions, list) or not sessions:
        raise CliError(f"{source}: `sessions` must be a non-empty list")
    parsed: list[list[str]] = []
    for i, session in enumerate(sessions, 1):
        messages = session.get("messages") if isinstance(session, dict) else session
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, str) and m.strip() for m in messages)):
            raise CliError(f"{source}: session {i} needs `messages`, a non-empty list of "
                           "non-empty strings")
        parsed.append(list(messages))
    for key in ("title", "system", "model"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise CliError(f"{source}: `{key}` must be a string")
    return Script(title=data.get("title") or os.path.basename(source), sessions=parsed,
                  system=data.get("system"), model=data.get("model"))


def load_script(path: str) -> Script:
    """Read a .toml or .json script."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if path.lower().endswith(".json"):
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} is not a valid {'JSON' if path.endswith('.json') else 'TOML'} "
                       f"script: {exc}") from exc
    return parse_script(data, path)


async def _ask(api: Api, body: dict[str, Any], headers: dict[str, str], turn: Turn,
               expect_memory: bool) -> str | None:
    """Send one request; fill `turn`; return the answer (None on error)."""
    started = time.perf_counter()
    try:
        response = await api.http.post("/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach memproxy at {api.base_url}: {exc}") from exc
    turn.latency_s = time.perf_counter() - started
    if response.status_code >= 400:
        turn.error = error_message(response)[0]
        return None
    if expect_memory and "x-memproxy-agent-id" not in response.headers:
        raise CliError("the memory run was passed through without memory: check that the "
                       "server takes X-Agent-Id, or name the memory model with --memory-model "
                       "(A/B mode: NAME+memory)")
    payload = response.json()
    usage = payload.get("usage") or {}
    turn.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    turn.completion_tokens = int(usage.get("completion_tokens") or 0)
    choices = payload.get("choices") or [{}]
    turn.answer = str((choices[0].get("message") or {}).get("content") or "")
    return turn.answer


async def run_arm(api: Api, script: Script, model: str, agent_id: str | None) -> Run:
    """Replay the script once: with memory when `agent_id` is given, else raw."""
    run = Run("with memory" if agent_id else "raw")
    for s, session in enumerate(script.sessions, 1):
        history: list[dict[str, Any]] = []
        if script.system:
            history.append({"role": "system", "content": script.system})
        if agent_id:
            headers = {"X-Agent-Id": agent_id, "X-Conversation-Id": f"session-{s}"}
        else:
            headers = {"X-Memory": "off"}
        for t, text in enumerate(session, 1):
            history.append({"role": "user", "content": text})
            turn = Turn(session=s, index=t, user=text)
            answer = await _ask(api, {"model": model, "messages": list(history)}, headers,
                                turn, expect_memory=agent_id is not None)
            run.turns.append(turn)
            if answer is None:
                history.pop()  # a failed turn leaves no trace, as in a real app's retry
            else:
                history.append({"role": "assistant", "content": answer})
    return run


def _report_json(script: Script, model: str, agent_id: str, runs: list[Run],
                 price: tuple[float, float] | None) -> dict[str, Any]:
    def turns(run: Run) -> list[dict[str, Any]]:
        return [{"session": t.session, "turn": t.index, "user": t.user, "answer": t.answer,
                 "error": t.error, "prompt_tokens": t.prompt_tokens,
                 "completion_tokens": t.completion_tokens, "latency_s": t.latency_s,
                 "cost_usd": t.cost(price)} for t in run.turns]

    return {"title": script.title, "model": model, "agent_id": agent_id,
            "price_per_million": None if price is None else {"input": price[0],
                                                             "output": price[1]},
            "memory": {"turns": turns(runs[0]), "totals": runs[0].totals(price)},
            "raw": {"turns": turns(runs[1]), "totals": runs[1].totals(price)}}


async def cmd_ab(api: Api, args: argparse.Namespace) -> int:
    script = load_script(args.script)
    if args.tenant:
        raise CliError("ab talks as the API key's tenant; --tenant does not apply", code=2)
    model = args.model or script.model or os.environ.get(MODEL_ENV) or await default_model(api)
    memory_model = args.memory_model or model
    if args.memory_model is None and api.local:
        ab = api.app.state.memproxy.settings.ab
        if ab.expose_raw_models:
            memory_model = model + ab.memory_suffix
    agent_id = f"ab-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    memory = await run_arm(api, script, memory_model, agent_id)
    raw = await run_arm(api, script, model, None)
    price = price_for(model, args.price_in, args.price_out)
    if args.json:
        print_json(_report_json(script, model, agent_id, [memory, raw], price))
    else:
        width = args.width or shutil.get_terminal_size((100, 24)).columns
        print(render(script.title, model, agent_id, memory, raw, price, width))
    return 1 if any(t.error for t in memory.turns + raw.turns) else 0


def register(sub: argparse._SubParsersAction, connection: argparse.ArgumentParser) -> None:
    ab = sub.add_parser(
        "ab", parents=[connection], help="replay a script with and without memory, compare",
        description="Replay a multi-session conversation script twice, with memory (a fresh "
        "agent, each session a new conversation) and raw (X-Memory: off), and print the "
        "answers side by side with prompt tokens, latency and cost per turn, then totals. "
        "See docs/ab.md and examples/ab/.",
    )
    ab.add_argument("script", help="a .toml or .json script (see examples/ab/)")
    ab.add_argument("--model", "-m", help="the model (default: the script's, "
                    f"${MODEL_ENV}, else the upstream's first)")
    ab.add_argument("--memory-model",
                    help="model name for the memory run (default: --model; NAME+memory when "
                    "the server's A/B mode lists raw models)")
    ab.add_argument("--price-in", type=float, metavar="USD",
                    help="input price per 1M tokens (default: a built-in table)")
    ab.add_argument("--price-out", type=float, metavar="USD",
                    help="output price per 1M tokens (default: a built-in table)")
    ab.add_argument("--upstream-url", help="OpenAI-compatible base URL (local mode)")
    ab.add_argument("--width", type=positive_int,
                    help="report width in characters (default: terminal)")
    ab.add_argument("--json", action="store_true", help="print the results as JSON")
    ab.set_defaults(api_func=cmd_ab, api_upstream=True)
