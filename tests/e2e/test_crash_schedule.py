"""Kill -9 at random moments over 300 turns (issue #8.2): every turn is answered exactly once.

A memproxy process (on SQLite, then on Postgres) fronts a fake upstream that takes
`LATENCY_S` per call, so that kills land inside turns. A seeded schedule (`random.Random`;
`MEMPROXY_CRASH_SEED` overrides the seed, which is printed and quoted in every failure) kills
the process with SIGKILL between requests, or while one is answered: at a random moment of a
non-stream or stream request, just as the upstream's last answer reaches memproxy, right after
the turn's commit (watched in the database) before the client has the answer, or right after
the first chunks of a stream. After each kill the process
restarts on the same database and the client resends the request that had no complete answer,
the way that kind of client does (docs/clients.md):

- `sdk`: only the new message; the resend carries `x-stainless-retry-count` as the SDK's own
  retries do;
- `sdk-key`: only the new message, with an `Idempotency-Key` per turn that the resend repeats;
- `history`: a chat UI that resends the whole history; the resend is the same body, with or
  without a retry count (a user pressing "retry").

A resend of an SDK-style request *without* any retry marker is not part of the schedule: after
a turn has finished it is indistinguishable from the user asking the same thing again, and is
stored again by design.

After a final graceful stop the database is read directly: each conversation's visible
transcript is each question once, each followed by exactly the answer the client accepted, in
order; memory steps are whole; every turn owning a message finished; no archival passage is
stored twice; and no prompt the upstream received held a question twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from proxy.store import sqlite_path
from tests import storage
from tests.fakes import FakeUpstream, Fault, scripted_model
from tests.servers import ProcessHandle, run_memproxy_subprocess
from tests.store_backends import Backend

pytestmark = pytest.mark.slow

MODEL = "gpt-4o-mini"
AGENT = "crash"
DEFAULT_SEED = 20240808
TURNS = 300
LATENCY_S = 0.03  # per upstream call: a turn lasts long enough for a timer to land inside it
CHUNK_DELAY_S = 0.003  # between streamed chunks
P_KILL = 0.095  # per turn: a kill is planned for its first attempt
P_KILL_AGAIN = 0.3  # per resend: the resend is killed too
MAX_KILLED_ATTEMPTS = 3  # the attempt after that is left alone
P_ARCHIVE = 0.12  # an SDK-style question that makes the model store an archival passage
SYSTEM = {"role": "system", "content": "You are the crash test's assistant."}
CONVERSATIONS = (("c-sdk", "sdk"), ("c-key", "sdk-key"), ("c-ui", "history"),
                 ("c-ui2", "history"))


def crash_seed() -> int:
    raw = os.environ.get("MEMPROXY_CRASH_SEED", "").strip()
    return int(raw) if raw else DEFAULT_SEED


@dataclass
class Kill:
    """How one attempt is cut: `between` (before it is sent), `timer` (after a `delay_s` part
    of the turn), `upstream` (just as the upstream's last answer arrives), `commit` (right
    after the turn is committed, before the answer is out) or `chunks` (a stream, after
    `chunks` chunks arrived)."""

    mode: str
    delay_s: float = 0.0
    chunks: int = 0


@dataclass
class Conversation:
    """One client's view of a conversation: the questions and the answers it accepted."""

    name: str
    style: str
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    def messages(self, question: str) -> list[dict[str, Any]]:
        if self.style != "history":
            return [{"role": "user", "content": question}]
        history: list[dict[str, Any]] = [SYSTEM]
        for q, a in zip(self.questions, self.answers, strict=True):
            history += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return [*history, {"role": "user", "content": question}]


class Restartable:
    """A memproxy process that can be SIGKILLed from any thread and restarted on its database."""

    def __init__(self, database_url: str, upstream_url: str, env: dict[str, str]) -> None:
        self.database_url = database_url
        self.args = ["--database-url", database_url, "--upstream-url", upstream_url]
        self.env = env
        self.handle: ProcessHandle | None = None
        self.client: openai.OpenAI | None = None
        self.start_s: list[float] = []
        self.kills: dict[str, int] = {}
        self.cut = 0  # attempts left without a complete answer
        self.log_tail = ""

    def start(self) -> None:
        started = time.monotonic()
        self.handle = run_memproxy_subprocess(self.args, env=self.env)
        self.start_s.append(time.monotonic() - started)
        self.client = openai.OpenAI(base_url=self.handle.base_url, api_key="sk-crash",
                                    max_retries=0, timeout=30.0)

    def kill(self, mode: str) -> None:
        assert self.handle is not None
        if self.handle.alive():
            self.handle.kill()
            self.kills[mode] = self.kills.get(mode, 0) + 1

    def ensure_running(self) -> None:
        """Restart after a kill (the old log is kept in `log_tail` for failure messages)."""
        assert self.handle is not None
        if self.handle.alive():
            return
        assert self.client is not None
        self.client.close()
        self.handle.stop()
        self.log_tail = self.handle.output()[-3000:]
        self.start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.handle is not None:
            self.handle.stop()
            self.log_tail = self.handle.output()[-3000:]


def plan_turn(rng: random.Random, stream: bool) -> list[Kill | None]:
    """The kills of one turn's attempts, drawn up front (a fixed number of draws per turn, so
    the schedule does not depend on which kills happened to cut an answer)."""
    plan: list[Kill | None] = []
    for attempt in range(MAX_KILLED_ATTEMPTS):
        roll, mode_roll, delay, chunks = rng.random(), rng.random(), rng.random(), rng.randint(1, 4)
        if roll >= (P_KILL if attempt == 0 else P_KILL_AGAIN):
            plan.append(None)
        elif mode_roll < 0.15:
            plan.append(Kill("between"))
        elif mode_roll < 0.3:
            plan.append(Kill("upstream", delay_s=delay))
        elif mode_roll < 0.45:
            plan.append(Kill("commit"))
        elif stream and mode_roll < 0.75:
            plan.append(Kill("chunks", chunks=chunks))
        else:
            plan.append(Kill("timer", delay_s=delay))
    return plan


def ask(server: Restartable, fake: FakeUpstream, conv: Conversation, question: str, *,
        stream: bool, headers: dict[str, str], kill: Kill | None, calls: int) -> str | None:
    """One attempt. Returns the complete answer, or None when a kill cut it off. Any other
    failure (an error status, an error event in the stream) is raised: it is a finding."""
    if kill is not None and kill.mode == "between":
        server.kill("between")
        server.ensure_running()
    done, ready = threading.Event(), threading.Event()
    killer: threading.Thread | None = None
    if kill is not None and kill.mode in ("timer", "upstream", "commit"):
        target = _kill_at_commit if kill.mode == "commit" else _kill_later
        killer = threading.Thread(target=target,
                                  args=(server, fake, kill, stream, calls, done, ready))
        killer.start()
        ready.wait()
    try:
        return _request(server, conv, question, stream, headers, kill)
    except (openai.APIConnectionError, httpx.TransportError):
        if kill is None or kill.mode == "between":
            raise
        return None
    finally:
        done.set()
        if killer is not None:
            killer.join()


def _kill_later(server: Restartable, fake: FakeUpstream, kill: Kill, stream: bool, calls: int,
                done: threading.Event, ready: threading.Event) -> None:
    """`timer`: SIGKILL after a random part of the turn's expected length. `upstream`: once
    the turn's last upstream call has been received, SIGKILL within ~20 ms of the fake's
    answer, when memproxy persists the turn and answers (a kill after the commit and before
    the client has the answer is what makes a retry a replay or a regenerate)."""
    ready.set()
    if kill.mode == "upstream":
        target = len(fake.requests) + calls
        while len(fake.requests) < target:
            if done.wait(0.002):
                return
        delay = LATENCY_S + kill.delay_s * 0.02
        mode = "upstream"
    else:
        delay = kill.delay_s * calls * (LATENCY_S + 0.04)
        mode = "stream" if stream else "non-stream"
    if not done.wait(delay):
        server.kill(mode)


def _kill_at_commit(server: Restartable, fake: FakeUpstream, kill: Kill, stream: bool,
                    calls: int, done: threading.Event, ready: threading.Event) -> None:
    """SIGKILL as soon as the turn's result is committed, before the client has the answer:
    the database's count of finished turns is watched (read-only, from the test's side)."""
    with finished_turns(server.database_url) as count:
        before = count()
        ready.set()
        while count() == before:
            if done.wait(0.001):
                return
    server.kill("commit")


@contextlib.contextmanager
def finished_turns(url: str) -> Iterator[Callable[[], int]]:
    """A function counting the database's finished turns, on a connection of its own."""
    sql = "SELECT count(*) FROM turns WHERE status = 'done'"
    if url.startswith("sqlite"):
        db = sqlite3.connect(sqlite_path(url), timeout=5)
        try:
            yield lambda: db.execute(sql).fetchone()[0]
        finally:
            db.close()
        return
    import asyncpg

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(url))
    try:
        yield lambda: loop.run_until_complete(conn.fetchval(sql))
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def _request(server: Restartable, conv: Conversation, question: str, stream: bool,
             headers: dict[str, str], kill: Kill | None) -> str | None:
    assert server.client is not None
    messages = conv.messages(question)
    if not stream:
        reply = server.client.chat.completions.create(
            model=MODEL, messages=messages, extra_headers=headers)
        content = reply.choices[0].message.content
        assert isinstance(content, str)
        return content
    text, finished, received = "", False, 0
    with server.client.chat.completions.create(
            model=MODEL, messages=messages, extra_headers=headers, stream=True,
            stream_options={"include_usage": True}) as chunks:
        for chunk in chunks:
            received += 1
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finished = finished or choice.finish_reason is not None
            if kill is not None and kill.mode == "chunks" and received == kill.chunks:
                server.kill("after-chunks")
                return None  # the rest of this stream is lost with the server
    return text if finished else None


def run_schedule(server: Restartable, fake: FakeUpstream, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    conversations = [Conversation(name, style) for name, style in CONVERSATIONS]
    for i in range(TURNS):
        conv = rng.choice(conversations)
        stream = rng.random() < 0.5
        archive = conv.style != "history" and rng.random() < P_ARCHIVE
        question = (f"Remember in archive: fact {conv.name} {i}" if archive
                    else f"{conv.name} question {i} {rng.randrange(10**6)}")
        plan = plan_turn(rng, stream)
        retry_flags = [rng.random() < 0.5 for _ in range(MAX_KILLED_ATTEMPTS + 1)]
        answer: str | None = None
        attempt = 0
        while answer is None:
            headers = {"X-Agent-Id": AGENT, "X-Conversation-Id": conv.name}
            if conv.style == "sdk-key":
                headers["Idempotency-Key"] = f"{conv.name}-{i}"
            if attempt and (conv.style == "sdk" or retry_flags[attempt]):
                headers["x-stainless-retry-count"] = str(attempt)
            kill = plan[attempt] if attempt < len(plan) else None
            answer = ask(server, fake, conv, question, stream=stream, headers=headers,
                         kill=kill, calls=2 if archive else 1)
            server.cut += answer is None
            server.ensure_running()
            attempt += 1
        conv.questions.append(question)
        conv.answers.append(answer)
    return conversations


def check_database(url: str, conversations: list[Conversation], fake: FakeUpstream,
                   context: str) -> dict[str, int]:
    """The invariants, read from the database after the final stop. Returns turn counts."""
    for conv in conversations:
        stored = storage.roles_and_texts(storage.transcript(url, AGENT, conv.name))
        expected: list[tuple[str, str]] = []
        for q, a in zip(conv.questions, conv.answers, strict=True):
            expected += [("user", q), ("assistant", a)]
        assert stored == expected, f"{context}: transcript of {conv.name} differs"
        for n, (q, a) in enumerate(zip(conv.questions, conv.answers, strict=True), start=1):
            if not q.startswith("Remember in archive:"):  # the model saw each question once
                assert a == f"Echo: {q} (saw {n} user messages)", f"{context}: {conv.name} #{n}"
        rows = storage.transcript(url, AGENT, conv.name, visible_only=False,
                                  include_superseded=True)
        _check_steps([m for m in rows if not m.superseded], f"{context}: {conv.name}")

    backend = Backend("sqlite" if url.startswith("sqlite") else "postgres", url, Exception)
    owners = {m.turn_id for conv in conversations
              for m in storage.transcript(url, AGENT, conv.name, visible_only=False)}
    statuses: dict[str, str] = dict(backend.run(
        lambda store: backend.sql(store, "SELECT turn_id, status FROM turns")))
    unfinished = sorted(t for t in owners if statuses.get(t) != "done")
    assert unfinished == [], f"{context}: turns holding messages are not done: {unfinished}"

    facts = [q.removeprefix("Remember in archive: ") for conv in conversations
             for q in conv.questions if q.startswith("Remember in archive:")]
    passages = backend.run(lambda store: backend.sql(store, "SELECT text FROM passages"))
    assert sorted(text for (text,) in passages) == sorted(facts), f"{context}: passages"

    for request in fake.requests:  # no prompt ever held a question twice
        users = [m.get("content") for m in request.json["messages"] if m.get("role") == "user"]
        assert len(users) == len(set(users)), f"{context}: a prompt repeated a question"
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def _check_steps(rows: list, context: str) -> None:
    """Non-superseded rows, oldest first, are whole turns: a user message, then pairs of a
    memory-tool call and its result, then the visible answer."""
    i = 0
    while i < len(rows):
        assert rows[i].role == "user" and rows[i].visible, f"{context}: seq {rows[i].seq}"
        i += 1
        while i < len(rows) and rows[i].data.get("tool_calls"):
            calls = rows[i].data["tool_calls"]
            results = rows[i + 1 : i + 1 + len(calls)]
            assert [r.role for r in results] == ["tool"] * len(calls), \
                f"{context}: a memory step without its result at seq {rows[i].seq}"
            assert not rows[i].visible and not any(r.visible for r in results)
            i += 1 + len(calls)
        assert i < len(rows) and rows[i].role == "assistant" and rows[i].visible, \
            f"{context}: a question without its answer before seq {rows[min(i, len(rows) - 1)].seq}"
        i += 1


def test_kill_9_schedule_answers_every_turn_exactly_once(database_url, fake_upstream):
    seed = crash_seed()
    print(f"crash schedule: seed {seed} (MEMPROXY_CRASH_SEED={seed} reproduces the schedule)")
    fake_upstream.responder = lambda body: Fault.delay(LATENCY_S, then=scripted_model(body))
    fake_upstream.stream_delay_s = CHUNK_DELAY_S
    server = Restartable(
        database_url, fake_upstream.url,
        env={"MEMPROXY_AGENT_LEASE_TTL_S": "1", "MEMPROXY_UPSTREAM_MAX_RETRIES": "0",
             "MEMPROXY_LOGGING_LEVEL": "WARNING"},
    )
    started = time.monotonic()
    server.start()
    try:
        conversations = run_schedule(server, fake_upstream, seed)
    except BaseException:
        server.stop()
        print(f"memproxy log (tail):\n{server.log_tail}")
        raise
    server.stop()
    elapsed = time.monotonic() - started
    context = f"seed {seed}"
    counts = check_database(database_url, conversations, fake_upstream, context)
    kills = sum(server.kills.values())
    print(f"crash schedule: {TURNS} turns, {kills} kills {server.kills} ({server.cut} cut an "
          f"answer), turns {counts}, "
          f"{len(fake_upstream.requests)} upstream calls, restart "
          f"{statistics.mean(server.start_s):.2f} s mean / {max(server.start_s):.2f} s max, "
          f"{elapsed:.1f} s in all")
    assert 15 <= kills, f"{context}: only {kills} kills; the schedule lost its teeth"
