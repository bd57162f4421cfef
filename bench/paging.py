"""Prompt size over a long conversation: memproxy vs a client that resends its whole history.

Prints Markdown tables and writes a PNG plot; it is not a test. Two phases:

1. **Paging** (`--turns`, default 2,000): the same user messages (30-60 words, ~40-80 tokens,
   deterministic) go
   - from a *raw client* that resends its whole growing history each turn straight to the fake
     upstream. It really sends until the fake rejects the prompt (400
     `context_length_exceeded`), checking the fake's count against the local one; from then on
     it only counts what it would have sent (OpenAI's message accounting, `proxy.tokens`), with
     the replies the fake would have given (`fake_upstream.reply_text`);
   - through memproxy, SDK style (only the new message, `X-Agent-Id`), with the model's window
     set to `--window` (default 8,192) in a config file. Per turn: what the fake received
     (its tiktoken count of every request, whether memproxy called the summarizer, any 400),
     memproxy's `x-memproxy-context-tokens` and `x-memproxy-overhead-ms`, and the end-to-end
     latency.
   The fake runs with `--count-tokens --summarize --reply-words 60-100`: real token counts,
   the window enforced the way OpenAI does, short summaries, replies of ~80-130 tokens.

2. **Stored** (`--stored`, default 10,000; 0 skips it): one conversation pre-populated with that
   many stored messages, all evicted but the last `--keep-in-context` under a realistic
   summary; then `--stored-turns` (default 300) measured turns interleaved with as many
   requests straight to the fake (the baseline), as `bench.overhead` does, and as many turns of
   a conversation that started empty (the control). The fake runs on its
   fast path here (no tokenizing, canned reply, only summarizer requests parsed), so that the
   difference to the baseline is memproxy's. Turns with a summarizer call are reported apart.

    python -m bench paging [--turns N] [--window W] [--stored M] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from .common import (
    REPO_ROOT,
    eprint,
    exit_on_signals,
    fmt_delta,
    fmt_ms,
    machine_block,
    machine_info,
    markdown_table,
    stop_all_children,
    summarize,
)
from .fake_upstream import reply_text, summary_text
from .overhead import (
    MODEL,
    TARGET_P50_MS,
    TARGET_P99_MS,
    TENANT,
    UPSTREAM_KEY,
    Stack,
    paragraph,
)
from .populate import populate

DEFAULT_TURNS = 2000
DEFAULT_WINDOW = 8192
DEFAULT_STORED = 10_000
DEFAULT_STORED_TURNS = 300
REPLY_WORDS = (60, 100)  # the fake's replies in phase 1 (~80-130 tokens)
SAVINGS_GOAL = 0.90
AGENT = "paging-bench"
STORED_AGENT = "paging-stored"
FRESH_AGENT = "paging-fresh"
PLOT_NAME = "paging-prompt-tokens.png"
COMPACT_AT = 0.9  # memproxy's defaults ([memory] compact_at / compact_to), for the plot and text
COMPACT_TO = 0.6
RESERVE_OUTPUT = 1024  # [memory] reserve_output_tokens (the requests set no max_tokens)

# --------------------------------------------------------------------------- text


def user_message(turn: int, prefix: str = "paging") -> str:
    """The user message of `turn`: 30-60 words of English-looking text (~40-80 tokens)."""
    rng = random.Random(f"{prefix}-{turn}")
    return paragraph(rng, rng.randint(30, 60))


# --------------------------------------------------------------------------- the stack


class PagingStack(Stack):
    """`stack.Stack` with options for the fake upstream and a memproxy config file."""

    def __init__(self, *, upstream_args: Sequence[str], config_toml: str,
                 prepare: Callable[[str], None] | None = None, keep_dir: bool = False,
                 context_window: int = DEFAULT_WINDOW) -> None:
        super().__init__(prepare=prepare, keep_dir=keep_dir, context_window=context_window,
                         upstream_args=upstream_args)
        config = self.tmp / "memproxy.toml"
        config.write_text(config_toml)
        self.memproxy_env = {"MEMPROXY_CONFIG": str(config), **self.memproxy_env}


def config_toml(window: int) -> str:
    return (f'[models."{MODEL}"]\ncontext_window = {window}\n')


class UpstreamLog:
    """Reads the fake's per-request records (`GET /stats/requests?after=N`) turn by turn."""

    def __init__(self, client: httpx.Client, upstream_url: str) -> None:
        self.client = client
        self.url = f"{upstream_url}/stats/requests"
        self.seen = 0

    def skip(self) -> None:
        self.seen = self.client.get(self.url, params={"after": 10**9}).json()["total"]

    def new(self) -> list[dict[str, Any]]:
        data = self.client.get(self.url, params={"after": self.seen}).json()
        self.seen = data["total"]
        return data["requests"]


HEADERS = {"authorization": f"Bearer {UPSTREAM_KEY}", "content-type": "application/json"}

# --------------------------------------------------------------------------- phase 1: raw client


@dataclass
class RawResult:
    prompt_tokens: list[int] = field(default_factory=list)  # per turn, what it sends
    first_rejected_turn: int | None = None
    rejection: str | None = None
    sent: int = 0  # turns really sent to the fake
    count_mismatches: int = 0  # turns where the fake's usage differs from the local count


def run_raw(client: httpx.Client, upstream_url: str, turns: int) -> RawResult:
    """The raw client: resend the whole history every turn; count what it sends."""
    from proxy import tokens

    result = RawResult()
    history: list[dict[str, str]] = []
    running = tokens.REPLY_PRIMING_TOKENS
    url = f"{upstream_url}/v1/chat/completions"
    for turn in range(1, turns + 1):
        user = {"role": "user", "content": user_message(turn)}
        history.append(user)
        running += tokens.count_message(user, MODEL)
        result.prompt_tokens.append(running)
        reply = None
        if result.first_rejected_turn is None:
            response = client.post(url, content=orjson.dumps({"model": MODEL,
                                                              "messages": history}),
                                   headers=HEADERS)
            result.sent += 1
            if response.status_code == 200:
                data = response.json()
                reply = data["choices"][0]["message"]["content"]
                if data["usage"]["prompt_tokens"] != running:
                    result.count_mismatches += 1
            elif (response.status_code == 400
                  and (response.json().get("error") or {}).get("code")
                  == "context_length_exceeded"):
                result.first_rejected_turn = turn
                result.rejection = response.json()["error"]["message"]
            else:
                raise RuntimeError(f"raw client turn {turn}: HTTP {response.status_code}: "
                                   f"{response.text[:300]}")
        if reply is None:  # what the fake would have answered
            reply = reply_text(user["content"], *REPLY_WORDS)
        assistant = {"role": "assistant", "content": reply}
        history.append(assistant)
        running += tokens.count_message(assistant, MODEL)
    return result


# --------------------------------------------------------------------------- phase 1: memproxy


@dataclass
class Turn:
    status: int
    e2e_ms: float
    header_ms: float | None
    context_tokens: int | None  # x-memproxy-context-tokens
    upstream_tokens: int | None  # the fake's count of the (last accepted) main request
    upstream_max_tokens: int | None  # the largest main request of the turn, accepted or not
    main_calls: int
    summarizer_calls: int
    summarizer_tokens: int  # prompt tokens of this turn's summarizer requests
    rejected: int  # 400 context_length_exceeded from the fake during the turn
    error: str | None = None


def _turn_from(response: httpx.Response, start: float, end: float,
               records: list[dict[str, Any]]) -> Turn:
    main = [r for r in records if not r["summarizer"]]
    accepted = [r for r in main if r["status"] == 200]
    summ = [r for r in records if r["summarizer"]]
    header = response.headers.get("x-memproxy-overhead-ms")
    ctx = response.headers.get("x-memproxy-context-tokens")
    return Turn(
        status=response.status_code,
        e2e_ms=(end - start) * 1000,
        header_ms=float(header) if header is not None else None,
        context_tokens=int(ctx) if ctx is not None else None,
        upstream_tokens=accepted[-1]["tokens"] if accepted else None,
        upstream_max_tokens=max((r["tokens"] for r in main), default=None),
        main_calls=len(main),
        summarizer_calls=len(summ),
        summarizer_tokens=sum(r["tokens"] or 0 for r in summ),
        rejected=sum(1 for r in records if r["status"] == 400),
        error=None if response.status_code == 200 else response.text[:300],
    )


def run_memproxy(client: httpx.Client, stack: PagingStack, turns: int,
                 deadline: float) -> list[Turn]:
    log = UpstreamLog(client, stack.upstream_url)
    log.skip()
    url = f"{stack.memproxy_url}/v1/chat/completions"
    headers = {**HEADERS, "x-agent-id": AGENT}
    out: list[Turn] = []
    gc.collect()
    gc.disable()  # the load generator's own pauses are not memproxy's latency
    try:
        for turn in range(1, turns + 1):
            if time.monotonic() > deadline:
                eprint(f"  time limit reached after {turn - 1} turns")
                break
            content = orjson.dumps({"model": MODEL, "messages": [
                {"role": "user", "content": user_message(turn)}]})
            start = time.perf_counter()
            response = client.post(url, content=content, headers=headers)
            end = time.perf_counter()
            out.append(_turn_from(response, start, end, log.new()))
            if sum(1 for t in out if t.status != 200) >= 20:
                raise RuntimeError("too many failed turns:\n"
                                   + "\n".join(t.error or "" for t in out if t.error))
            if turn % 250 == 0:
                gc.enable()
                gc.collect()
                gc.disable()
                eprint(f"  memproxy turn {turn}/{turns}")
    finally:
        gc.enable()
    return out


def context_report(client: httpx.Client, memproxy_url: str, agent: str) -> dict[str, Any] | None:
    try:
        response = client.get(f"{memproxy_url}/v1/agents/{agent}/context",
                              params={"model": MODEL}, headers=HEADERS)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


# --------------------------------------------------------------------------- phase 2: stored


async def evict_all_but(db_url: str, agent_id: str, keep: int, window: int) -> tuple[int, int]:
    """Take all but the last `keep` messages of the agent's default conversation out of
    context, under a summary the fake's summarizer would have written by folding them in
    chunks (as memproxy does). Returns (messages evicted, summary characters)."""
    from proxy.core.identity import DEFAULT_CONVERSATION
    from proxy.core.summary import render_transcript, summary_request
    from proxy.store import open_store
    from proxy.turn.summarizer import CHARS_PER_TOKEN, SUMMARY_SHARE

    store = open_store(db_url)
    await store.open()
    try:
        agent = await store.get_agent(TENANT, agent_id)
        assert agent is not None
        conversation = await store.ensure_conversation(agent.pk, DEFAULT_CONVERSATION)
        context = await store.context_messages(conversation.pk)
        keep = min(keep, len(context))
        if keep % 2:  # cut before a user message (the messages are user/assistant pairs)
            keep += 1
        evicted = context[:len(context) - keep]
        if not evicted:
            return 0, 0
        max_chars = max(400, int(window * SUMMARY_SHARE * CHARS_PER_TOKEN))
        summary = ""
        for i in range(0, len(evicted), 30):  # ~ what one compaction evicts in phase 1
            chunk = render_transcript([{**m.data, "_created_at": m.created_at}
                                       for m in evicted[i:i + 30]])
            request = summary_request(summary, chunk, max_chars=max_chars)
            summary = summary_text(request[1]["content"])
        await store.evict_messages(conversation.pk, evicted[-1].seq, summary)
        return len(evicted), len(summary)
    finally:
        await store.close()


@dataclass
class StoredRun:
    baseline_ms: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)  # the conversation with `stored` messages
    fresh: list[Turn] = field(default_factory=list)  # control: a conversation started empty
    prepare_seconds: float = 0.0
    evicted: int = 0
    summary_chars: int = 0
    stored_at_start: int = 0
    complete: bool = True
    report_end: dict[str, Any] | None = None


def run_stored(args: argparse.Namespace, deadline: float, keep_dir: bool) -> StoredRun:
    run = StoredRun(stored_at_start=args.stored)

    def prepare(db_url: str) -> None:
        started = time.perf_counter()
        asyncio.run(populate(db_url, [STORED_AGENT], args.stored, in_context=True,
                             text=paragraph))
        run.evicted, run.summary_chars = asyncio.run(
            evict_all_but(db_url, STORED_AGENT, args.keep_in_context, args.window))
        run.prepare_seconds = time.perf_counter() - started
        eprint(f"  pre-populated {args.stored:,} messages ({run.evicted:,} evicted, summary "
               f"{run.summary_chars:,} chars) in {run.prepare_seconds:.1f} s")

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with PagingStack(upstream_args=["--summarize"], config_toml=config_toml(args.window),
                     prepare=prepare, keep_dir=keep_dir, context_window=args.window) as stack, \
            httpx.Client(timeout=120.0, limits=limits) as client:
        log = UpstreamLog(client, stack.upstream_url)
        direct_url = f"{stack.upstream_url}/v1/chat/completions"
        proxy_url = f"{stack.memproxy_url}/v1/chat/completions"
        counter = iter(range(10**9))

        def direct(record: bool) -> None:
            content = orjson.dumps({"model": MODEL, "messages": [
                {"role": "user", "content": user_message(next(counter), "stored-a")}]})
            start = time.perf_counter()
            response = client.post(direct_url, content=content, headers=HEADERS)
            end = time.perf_counter()
            if response.status_code != 200:
                raise RuntimeError(f"baseline: HTTP {response.status_code}: {response.text[:300]}")
            if record:
                run.baseline_ms.append((end - start) * 1000)

        def turn(agent: str, into: list[Turn] | None) -> None:
            log.skip()
            content = orjson.dumps({"model": MODEL, "messages": [
                {"role": "user", "content": user_message(next(counter), "stored-c")}]})
            start = time.perf_counter()
            response = client.post(proxy_url, content=content,
                                   headers={**HEADERS, "x-agent-id": agent})
            end = time.perf_counter()
            result = _turn_from(response, start, end, log.new())
            if result.status != 200:
                raise RuntimeError(f"turn of {agent}: HTTP {result.status}: {result.error}")
            if into is not None:
                into.append(result)

        eprint(f"  warm-up: {args.warmup} direct + {args.warmup} turns per conversation")
        for _ in range(args.warmup):
            direct(False)
        for agent in (FRESH_AGENT, STORED_AGENT):
            for _ in range(args.warmup):
                turn(agent, None)
        rounds = 5
        per_round = [args.stored_turns // rounds + (1 if r < args.stored_turns % rounds else 0)
                     for r in range(rounds)]
        for r, count in enumerate(per_round):
            if time.monotonic() > deadline:
                eprint(f"  time limit reached after {r} of {rounds} rounds")
                run.complete = False
                break
            eprint(f"  round {r + 1}/{rounds}: {count} direct + {count} turns per conversation")
            gc.collect()
            gc.disable()
            try:
                for _ in range(count):
                    direct(True)
                for _ in range(count):
                    turn(FRESH_AGENT, run.fresh)
                for _ in range(count):
                    turn(STORED_AGENT, run.turns)
            finally:
                gc.enable()
        run.report_end = context_report(client, stack.memproxy_url, STORED_AGENT)
    return run


# --------------------------------------------------------------------------- results


def _blocks(values: Sequence[int], first_turn: int, parts: int = 4
            ) -> list[tuple[int, int, float, int]]:
    """(first turn, last turn, mean, max) of `values` (turns from `first_turn` on) cut into
    `parts` blocks of nearly equal length."""
    out = []
    n = len(values)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = values[lo:hi]
        if part:
            out.append((first_turn + lo, first_turn + hi - 1, sum(part) / len(part), max(part)))
    return out


def analyse(raw: RawResult, turns: list[Turn], window: int) -> dict[str, Any]:
    n = len(turns)
    raw_tokens = raw.prompt_tokens[:n]
    mp_tokens = [t.upstream_tokens or 0 for t in turns]
    mp_max = [t.upstream_max_tokens or 0 for t in turns]
    summ_tokens = sum(t.summarizer_tokens for t in turns)
    raw_total = sum(raw_tokens)
    mp_total = sum(mp_tokens)
    first_compaction = next((i for i, t in enumerate(turns) if t.summarizer_calls), None)
    steady = mp_tokens[first_compaction:] if first_compaction is not None else []
    blocks = _blocks(steady, first_compaction + 1) if len(steady) >= 4 else []
    plain = [t for t in turns if t.status == 200 and not t.summarizer_calls]
    summ = [t for t in turns if t.status == 200 and t.summarizer_calls]
    ctx_err = [(t.context_tokens - t.upstream_tokens) / t.upstream_tokens for t in turns
               if t.context_tokens and t.upstream_tokens]
    return {
        "turns": n,
        "raw": {"total": raw_total, **summarize(raw_tokens),
                "first_rejected_turn": raw.first_rejected_turn, "rejection": raw.rejection,
                "rejected_prompt_tokens": (raw.prompt_tokens[raw.first_rejected_turn - 1]
                                           if raw.first_rejected_turn else None),
                "sent": raw.sent, "count_mismatches": raw.count_mismatches},
        "memproxy": {"total": mp_total, **summarize(mp_tokens),
                     "largest_sent": max(mp_max, default=0),
                     "largest_accepted": max(mp_tokens, default=0)},
        "summarizer": {"calls": sum(t.summarizer_calls for t in turns),
                       "turns": len(summ), "prompt_tokens": summ_tokens},
        "memproxy_incl_summarizer_total": mp_total + summ_tokens,
        "saved": 1 - mp_total / raw_total if raw_total else math.nan,
        "saved_incl_summarizer": (1 - (mp_total + summ_tokens) / raw_total
                                  if raw_total else math.nan),
        "rejected_by_upstream": sum(t.rejected for t in turns),
        "failed_turns": sum(1 for t in turns if t.status != 200),
        "extra_main_calls": sum(max(0, t.main_calls - 1) for t in turns),
        "first_compaction_turn": first_compaction + 1 if first_compaction is not None else None,
        "blocks": blocks,
        "steady_mean_spread": (max(b[2] for b in blocks) / min(b[2] for b in blocks) - 1
                               if blocks else None),
        "context_header_error": summarize(ctx_err) if ctx_err else None,
        "latency": {
            "plain": {"n": len(plain), "e2e": summarize(t.e2e_ms for t in plain),
                      "header": summarize(t.header_ms for t in plain
                                          if t.header_ms is not None)},
            "summarizer": {"n": len(summ), "e2e": summarize(t.e2e_ms for t in summ),
                           "header": summarize(t.header_ms for t in summ
                                               if t.header_ms is not None)},
        },
        "window": window,
    }


def analyse_stored(run: StoredRun) -> dict[str, Any]:
    base = summarize(run.baseline_ms)
    plain = [t for t in run.turns if not t.summarizer_calls]
    summ = [t for t in run.turns if t.summarizer_calls]

    def row(ts: list[Turn]) -> dict[str, Any]:
        e2e = summarize(t.e2e_ms for t in ts)
        return {"n": len(ts), "e2e": e2e,
                "delta": {q: e2e[q] - base[q] for q in ("p50", "p95", "p99")},
                "header": summarize(t.header_ms for t in ts if t.header_ms is not None),
                "context_tokens_mean": (sum(t.context_tokens or 0 for t in ts) / len(ts)
                                        if ts else math.nan)}

    plain_row = row(plain)
    fresh_plain = [t for t in run.fresh if not t.summarizer_calls]
    return {
        "stored_at_start": run.stored_at_start,
        "evicted_at_start": run.evicted,
        "summary_chars_at_start": run.summary_chars,
        "prepare_seconds": round(run.prepare_seconds, 1),
        "baseline": {"n": len(run.baseline_ms), "e2e": base},
        "plain": plain_row,
        "summarizer": row(summ),
        "fresh_plain": row(fresh_plain),
        "fresh_summarizer": row([t for t in run.fresh if t.summarizer_calls]),
        "summarizer_calls": sum(t.summarizer_calls for t in run.turns),
        "meets_target": (plain_row["delta"]["p50"] <= TARGET_P50_MS
                         and plain_row["delta"]["p99"] <= TARGET_P99_MS),
        "complete": run.complete,
        "context_at_end": run.report_end,
    }


def _n(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}"


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}%"


def render(info: dict[str, Any], config: dict[str, Any], res: dict[str, Any] | None,
           stored: dict[str, Any] | None, plot: str | None,
           end_report: dict[str, Any] | None) -> str:
    lines = ["## memproxy context paging benchmark", "", machine_block(info)]
    if res is not None:
        w = res["window"]
        raw, mp = res["raw"], res["memproxy"]
        lines += [
            f"- phase 1: {res['turns']:,} turns of one conversation; model window {w:,} tokens "
            f"(memproxy compacts above {COMPACT_AT:.0%} of it, down to {COMPACT_TO:.0%}, "
            f"reserving 1,024 output tokens); user messages of 30–60 words, fake replies of "
            f"{REPLY_WORDS[0]}–{REPLY_WORDS[1]} words; prompt tokens counted by the fake "
            f"upstream with tiktoken (OpenAI's message and tool accounting)", "",
            "### Prompt tokens per turn", "",
            markdown_table(
                ["client", "total", "mean", "p50", "p95", "p99", "max", "max / window"],
                [["raw client (resends its whole history)", _n(raw["total"]), _n(raw["mean"]),
                  _n(raw["p50"]), _n(raw["p95"]), _n(raw["p99"]), _n(raw["max"]),
                  f"{raw['max'] / w:,.1f}×"],
                 ["memproxy (what it sent upstream)", _n(mp["total"]), _n(mp["mean"]),
                  _n(mp["p50"]), _n(mp["p95"]), _n(mp["p99"]), _n(mp["max"]),
                  _pct(mp["max"] / w)],
                 ["memproxy + its summarizer calls",
                  _n(res["memproxy_incl_summarizer_total"]),
                  _n(res["memproxy_incl_summarizer_total"] / res["turns"]),
                  "", "", "", "", ""]]), "",
        ]
        first_rej = raw["first_rejected_turn"]
        raw_fail = (f"turn {first_rej:,} (a {_n(raw['rejected_prompt_tokens'])}-token prompt); "
                    f"every later turn would fail too" if first_rej
                    else "never within these turns")
        block_text = "; ".join(f"{a:,}–{b:,}: mean {m:,.0f}, max {x:,}"
                               for a, b, m, x in res["blocks"])
        herr = res["context_header_error"]
        rows = [
            ["total prompt tokens saved vs the raw client", _pct(res["saved"])],
            ["… counting memproxy's summarizer calls too", _pct(res["saved_incl_summarizer"])],
            ["largest prompt memproxy sent upstream", f"{_n(mp['largest_sent'])} tokens "
             f"({_pct(mp['largest_sent'] / w)} of the {w:,} window)"],
            ["compactions (summarizer calls / turns with one)",
             f"{res['summarizer']['calls']:,} / {res['summarizer']['turns']:,}, first at turn "
             f"{_n(res['first_compaction_turn'])}"],
            ["summarizer prompt tokens", _n(res["summarizer"]["prompt_tokens"])],
            ["upstream 400 context_length_exceeded (memproxy)",
             f"{res['rejected_by_upstream']:,}"],
            ["failed turns (memproxy answered non-200)", f"{res['failed_turns']:,}"],
            ["raw client rejected by the window from", raw_fail],
            ["raw client: the fake's usage.prompt_tokens vs the local count",
             f"equal on {raw['sent'] - (1 if first_rej else 0) - raw['count_mismatches']:,} of "
             f"{raw['sent'] - (1 if first_rej else 0):,} accepted turns"],
            ["memproxy prompt per block of turns after the first compaction", block_text or "–"],
            ["x-memproxy-context-tokens vs the fake's count (mean, min, max)",
             f"{_pct(herr['mean'])}, {_pct(herr['min'])}, {_pct(herr['max'])}" if herr else "–"],
        ]
        if end_report:
            rows.append(["memproxy's context report at the end",
                         f"{end_report['messages_in_context']} messages in context, "
                         f"{end_report['tokens']['total']:,} of {end_report['window']:,} tokens "
                         f"(incl. reserved output), summary {len(end_report['summary'] or ''):,}"
                         f" chars, calibration factor {end_report['calibration_factor']}"])
        if plot:
            rows.append(["plot", plot])
        lines += ["### Paging", "", markdown_table(["", ""], rows, align=["l", "l"]), ""]
        lat = res["latency"]

        def lrow(label: str, part: dict[str, Any]) -> list[str]:
            e, h = part["e2e"], part["header"]
            return [label, f"{part['n']:,}", fmt_ms(e["p50"]), fmt_ms(e["p95"]), fmt_ms(e["p99"]),
                    fmt_ms(h["p50"]), fmt_ms(h["p95"]), fmt_ms(h["p99"])]

        lines += ["### Per-turn latency over the conversation (ms)", "",
                  markdown_table(["turns", "N", "end-to-end p50", "p95", "p99",
                                  "x-memproxy-overhead-ms p50", "p95", "p99"],
                                 [lrow("without a summarizer call", lat["plain"]),
                                  lrow("with a summarizer call", lat["summarizer"])]), "",
                  "End-to-end includes the fake's tokenizing of each ~6k-token prompt (a few "
                  "ms); the header excludes time waiting for the upstream.", ""]
    if stored is not None:
        b, p, s = stored["baseline"], stored["plain"], stored["summarizer"]

        def srow(label: str, part: dict[str, Any], delta: bool) -> list[str]:
            e = part["e2e"]
            d = part.get("delta") or {}
            h = part.get("header") or {}
            return [label, f"{part['n']:,}", fmt_ms(e["p50"]), fmt_ms(e["p95"]), fmt_ms(e["p99"]),
                    fmt_delta(d.get("p50")) if delta else "–",
                    fmt_delta(d.get("p95")) if delta else "–",
                    fmt_delta(d.get("p99")) if delta else "–",
                    fmt_ms(h.get("p50")), fmt_ms(h.get("p95")), fmt_ms(h.get("p99"))]

        lines += [f"### Overhead at {stored['stored_at_start']:,} stored messages (ms)", "",
                  f"One conversation with {stored['stored_at_start']:,} stored messages "
                  f"({stored['evicted_at_start']:,} evicted under a "
                  f"{stored['summary_chars_at_start']:,}-character summary), window "
                  f"{config['window']:,}; {config['warmup']} warm-up turns, then "
                  f"{p['n'] + s['n']} measured turns interleaved in 5 rounds with as many "
                  f"direct requests to the fake upstream (fast path, canned reply) and, as a "
                  f"control, as many turns of a conversation that started empty.", "",
                  markdown_table(["scenario", "N", "p50", "p95", "p99", "Δp50 vs (a)",
                                  "Δp95 vs (a)", "Δp99 vs (a)", "hdr p50", "hdr p95", "hdr p99"],
                                 [srow("(a) direct to fake upstream", b, False),
                                  srow(f"{stored['stored_at_start']:,} stored, turns without a "
                                       f"summarizer call", p, True),
                                  srow(f"{stored['stored_at_start']:,} stored, turns with a "
                                       f"summarizer call", s, True),
                                  srow("control: started empty, without a summarizer call",
                                       stored["fresh_plain"], True),
                                  srow("control: started empty, with a summarizer call",
                                       stored["fresh_summarizer"], True)]), ""]
        end = stored.get("context_at_end")
        if end:
            lines += [f"At the end: {end['messages_in_context']} messages in context, "
                      f"{end['tokens']['total']:,} of {end['window']:,} tokens, summary "
                      f"{len(end['summary'] or ''):,} chars; summarizer calls during the measured "
                      f"turns: {stored['summarizer_calls']}.", ""]
    lines += ["### Goals", ""] + goals(res, stored)
    return "\n".join(lines)


def _misses(p50: bool, p99: bool) -> str:
    missed = [name for name, miss in (("p50", p50), ("p99", p99)) if miss]
    return f" ({' and '.join(missed)} {'misses' if len(missed) == 1 else 'miss'})" if missed else ""


def goals(res: dict[str, Any] | None, stored: dict[str, Any] | None) -> list[str]:
    out = []
    if res is not None:
        w = res["window"]
        mp = res["memproxy"]
        spread = res["steady_mean_spread"]
        flat = spread is not None and spread <= 0.10
        out.append(f"- prompt size flat: block means after the first compaction differ by "
                   f"{_pct(spread)} (≤ 10%) → {'met' if flat else 'NOT met'}")
        bounded = mp["largest_sent"] <= w and res["rejected_by_upstream"] == 0
        out.append(f"- bounded by the window: largest prompt sent {mp['largest_sent']:,} ≤ "
                   f"{w:,}, {res['rejected_by_upstream']} upstream rejections → "
                   f"{'met' if bounded else 'NOT met'}")
        saved = res["saved_incl_summarizer"]
        out.append(f"- ≥ {SAVINGS_GOAL:.0%} fewer total prompt tokens over {res['turns']:,} "
                   f"turns: {_pct(res['saved'], 2)} ({_pct(saved, 2)} counting the summarizer "
                   f"calls) "
                   f"→ {'met' if saved >= SAVINGS_GOAL else 'NOT met'}")
    if stored is not None:
        d = stored["plain"]["delta"]
        out.append(f"- overhead at {stored['stored_at_start']:,} stored messages, summarizer turns "
                   f"excluded: Δp50 {d['p50']:.2f} ms (target ≤ {TARGET_P50_MS:g}), Δp99 "
                   f"{d['p99']:.2f} ms (target ≤ {TARGET_P99_MS:g}) → "
                   f"{'met' if stored['meets_target'] else 'NOT met'}"
                   + _misses(d["p50"] > TARGET_P50_MS, d["p99"] > TARGET_P99_MS))
    return out


# --------------------------------------------------------------------------- plot


def plot(path: Path, raw_tokens: Sequence[int], turns: list[Turn], window: int,
         first_rejected: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(turns)
    xs = range(1, n + 1)
    mp = [t.upstream_tokens if t.upstream_tokens is not None else float("nan") for t in turns]
    summ_x = [i + 1 for i, t in enumerate(turns) if t.summarizer_calls]
    summ_y = [mp[i - 1] for i in summ_x]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8.5), sharex=True,
                                      gridspec_kw={"height_ratios": [1.15, 1]})
    fig.suptitle(f"prompt tokens per turn: memproxy vs a client resending its whole history\n"
                 f"({n:,} turns, model window {window:,} tokens)", fontsize=12)
    top.plot(xs, raw_tokens[:n], color="tab:red", lw=1.6,
             label="raw client (whole history every turn)")
    top.plot(xs, mp, color="tab:blue", lw=1.0, label="memproxy (prompt sent upstream)")
    top.axhline(window, color="black", ls="--", lw=1.2, label=f"context window ({window:,})")
    if first_rejected:
        top.axvline(first_rejected, color="tab:red", ls=":", lw=1.0)
        top.annotate(f"from turn {first_rejected:,} the raw client's prompt exceeds the window "
                     f"(a real model rejects it)",
                     xy=(first_rejected, window), xytext=(n * 0.12, window * 0.12),
                     arrowprops={"arrowstyle": "->", "color": "tab:red"}, color="tab:red",
                     fontsize=9)
    top.set_yscale("log")
    top.set_ylabel("prompt tokens (log scale)")
    top.grid(True, which="both", alpha=0.25)
    top.legend(loc="upper left", fontsize=9)
    bottom.plot(xs, mp, color="tab:blue", lw=0.9, label="memproxy (prompt sent upstream)")
    bottom.scatter(summ_x, summ_y, s=9, color="tab:orange", zorder=3,
                   label=f"turns with a summarizer call ({len(summ_x):,})")
    bottom.axhline(window, color="black", ls="--", lw=1.2, label=f"context window ({window:,})")
    high = window * COMPACT_AT - RESERVE_OUTPUT
    low = window * COMPACT_TO - RESERVE_OUTPUT
    bottom.axhline(high, color="gray", ls=":", lw=1.0,
                   label=f"compaction trigger: {COMPACT_AT:.0%} of the window − "
                         f"{RESERVE_OUTPUT:,} reserved output ({high:,.0f})")
    bottom.axhline(low, color="gray", ls="-.", lw=0.8,
                   label=f"compaction target: {COMPACT_TO:.0%} of the window − "
                         f"{RESERVE_OUTPUT:,} ({low:,.0f})")
    bottom.set_ylim(0, window * 1.08)
    bottom.set_xlim(0, n + 1)
    bottom.set_ylabel("prompt tokens (linear)")
    bottom.set_xlabel("turn")
    bottom.grid(True, alpha=0.25)
    bottom.legend(loc="lower right", fontsize=8.5, framealpha=0.95)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench paging",
                                description="prompt tokens per turn over a long conversation: "
                                            "memproxy vs a client resending its whole history "
                                            "(prints Markdown tables, writes a PNG)")
    p.add_argument("--turns", type=int, default=DEFAULT_TURNS,
                   help=f"turns of the long conversation (default {DEFAULT_TURNS:,}; 0 skips it)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"the model's context window in tokens (default {DEFAULT_WINDOW:,})")
    p.add_argument("--stored", type=int, default=DEFAULT_STORED,
                   help=f"stored messages for the overhead phase (default {DEFAULT_STORED:,}; "
                        "0 skips it)")
    p.add_argument("--stored-turns", type=int, default=DEFAULT_STORED_TURNS,
                   help=f"measured turns at --stored messages (default {DEFAULT_STORED_TURNS})")
    p.add_argument("--keep-in-context", type=int, default=20,
                   help="of the stored messages, how many stay in context (default 20)")
    p.add_argument("--warmup", type=int, default=30,
                   help="warm-up turns and direct requests in the stored phase (default 30)")
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "out"),
                   help="directory for the PNG plot and paging.md (default bench/out/)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot (no matplotlib needed)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--time-limit", type=float, default=600.0,
                   help="stop measuring after this many seconds (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_signals()
    if args.turns < 0 or args.stored < 0 or args.window < 1024:
        raise SystemExit("--turns and --stored must be >= 0, --window >= 1024")
    if args.stored and args.stored_turns < 5:
        raise SystemExit("--stored-turns must be >= 5")
    started = time.monotonic()
    deadline = started + args.time_limit
    info = machine_info()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = stored = end_report = None
    raw: RawResult | None = None
    stored_run: StoredRun | None = None
    turns: list[Turn] = []
    plot_path: Path | None = None
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    try:
        if args.turns:
            eprint(f"phase 1: {args.turns:,} turns, window {args.window:,}")
            fake_args = ["--count-tokens", "--summarize", "--reply-words",
                         f"{REPLY_WORDS[0]}-{REPLY_WORDS[1]}"]
            with PagingStack(upstream_args=fake_args, config_toml=config_toml(args.window),
                             keep_dir=args.keep, context_window=args.window) as stack, \
                    httpx.Client(timeout=120.0, limits=limits) as client:
                t0 = time.monotonic()
                raw = run_raw(client, stack.upstream_url, args.turns)
                eprint(f"  raw client: {raw.sent} turns sent, rejected from turn "
                       f"{raw.first_rejected_turn} ({time.monotonic() - t0:.1f} s)")
                turns = run_memproxy(client, stack, args.turns, deadline)
                end_report = context_report(client, stack.memproxy_url, AGENT)
                eprint(f"  memproxy: {len(turns):,} turns in {time.monotonic() - t0:.1f} s")
            res = analyse(raw, turns, args.window)
            if not args.no_plot and turns:
                plot_path = out_dir / PLOT_NAME
                plot(plot_path, raw.prompt_tokens, turns, args.window, raw.first_rejected_turn)
                eprint(f"  wrote {plot_path}")
        if args.stored:
            eprint(f"phase 2: {args.stored:,} stored messages, {args.stored_turns} turns")
            stored_run = run_stored(args, deadline, args.keep)
            stored = analyse_stored(stored_run)
    finally:
        stop_all_children()
    config = {"turns": args.turns, "window": args.window, "stored": args.stored,
              "stored_turns": args.stored_turns, "keep_in_context": args.keep_in_context,
              "warmup": args.warmup, "reply_words": REPLY_WORDS,
              "seconds": round(time.monotonic() - started, 1),
              "load_avg_after": os.getloadavg() if hasattr(os, "getloadavg") else None}
    plot_name = plot_path.name if plot_path else None
    text = render(info, config, res, stored, plot_name, end_report)
    print(text)
    (out_dir / "paging.md").write_text(text + "\n")
    eprint(f"finished in {config['seconds']} s; wrote {out_dir / 'paging.md'}")
    if args.json:
        data = {"machine": info, "config": config, "paging": res, "stored": stored,
                "context_at_end": end_report,
                "samples": {
                    "raw_prompt_tokens": raw.prompt_tokens if raw else [],
                    "turns": [t.__dict__ for t in turns],
                    "stored_baseline_ms": stored_run.baseline_ms if stored_run else [],
                    "stored_turns": [t.__dict__ for t in stored_run.turns] if stored_run else [],
                    "fresh_turns": [t.__dict__ for t in stored_run.fresh] if stored_run else [],
                }}
        Path(args.json).write_text(json.dumps(data, indent=1))
        eprint(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
