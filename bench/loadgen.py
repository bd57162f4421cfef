"""A load generator for the throughput benchmarks, run as its own process.

It holds `--concurrency` keep-alive HTTP/1.1 connections and sends chat requests over them as
fast as they are answered, for `--duration` seconds after `--warmup` seconds, then prints one
JSON object (requests, errors, rate, latency percentiles) on stdout.

The client is a few lines of raw HTTP/1.1 over asyncio streams rather than httpx: a general
client costs ~0.5 ms of CPU per request, which on a two-core machine would make the load
generator, not the server, the bottleneck being measured.

    python -m bench.loadgen --url http://127.0.0.1:8080 --mode stateful --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

MODEL = "bench-model"
MODES = ("direct", "passthrough", "stateful")


@dataclass
class Tally:
    measuring: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def request_bytes(host: str, mode: str, agent: str, index: int) -> bytes:
    """One complete HTTP/1.1 request: a chat completion with a short new user message."""
    body = orjson.dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Message {index}: what should I cook tonight?"}],
    })
    headers = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        "Authorization: Bearer sk-bench",
        f"Content-Length: {len(body)}",
    ]
    if mode == "stateful":
        headers.append(f"X-Agent-Id: {agent}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


def agent_of(worker_id: int, sent: int, agents: int, concurrency: int) -> int:
    """The agent of worker `worker_id`'s request number `sent`: worker w serves agents
    w, w+C, w+2C, ... below `agents` (at least its own w), in turn, so no two in-flight
    requests ever share an agent's conversation and lock waits do not blur the measurement.
    (With several memproxy processes a shared conversation is worse than a wait: the lease
    is polled from 20 ms on.) When C does not divide `agents`, the last few agents are
    left out rather than shared."""
    own = max(1, agents // concurrency)
    return worker_id + concurrency * (sent % own)


async def worker(url: str, mode: str, agents: int, worker_id: int, concurrency: int,
                 tally: Tally, stop: asyncio.Event, prefix: str = "load-") -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    index = worker_id
    sent = 0
    try:
        while not stop.is_set():
            agent = f"{prefix}{agent_of(worker_id, sent, agents, concurrency):05d}"
            payload = request_bytes(f"{host}:{port}", mode, agent, index)
            started = time.perf_counter()
            writer.write(payload)
            try:
                status = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                tally.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            elapsed = time.perf_counter() - started
            if tally.measuring:
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if status == 200:
                    tally.latencies.append(elapsed * 1000)
                else:
                    tally.errors += 1
            index += concurrency
            sent += 1
    finally:
        writer.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


async def run(url: str, mode: str, concurrency: int, duration: float, warmup: float,
              agents: int, prefix: str = "load-") -> dict:
    tally = Tally()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker(url, mode, agents, i, concurrency, tally, stop, prefix))
             for i in range(concurrency)]
    await asyncio.sleep(warmup)
    tally.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    tally.measuring = False
    seconds = time.perf_counter() - started
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    ok = len(tally.latencies)
    return {
        "mode": mode, "concurrency": concurrency, "seconds": seconds, "requests": ok,
        "errors": tally.errors, "statuses": {str(k): v for k, v in tally.statuses.items()}, "rps": ok / seconds,
        "p50_ms": percentile(tally.latencies, 50), "p95_ms": percentile(tally.latencies, 95),
        "p99_ms": percentile(tally.latencies, 99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL (memproxy or the fake upstream)")
    parser.add_argument("--mode", choices=MODES, default="stateful")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--agents", type=int, default=200, help="distinct agents (stateful)")
    parser.add_argument("--agent-prefix", default="load-",
                        help="agent ids are PREFIX00000, PREFIX00001, ... (stateful)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.mode, args.concurrency, args.duration, args.warmup,
                             args.agents, args.agent_prefix))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
