"""Several memproxy processes on one database: turns of a conversation never interleave."""

from __future__ import annotations

import threading

import openai

from tests import secrets, storage
from tests.servers import run_concurrently, run_memproxy_subprocess


def test_two_processes_on_one_sqlite_file(tmp_path, fake_upstream):
    db = f"sqlite:///{tmp_path}/shared.db"
    args = ["--database-url", db, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as p1, run_memproxy_subprocess(args, env={}) as p2:
        errors = run_concurrently(20, lambda i: openai.OpenAI(
            base_url=(p1 if i % 2 else p2).base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
            timeout=60,
        ).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"m{i}"}],
            extra_headers={"X-Agent-Id": "shared"}))
    assert errors == []
    stored = storage.roles_and_texts(storage.transcript(db, "shared"))
    assert [r for r, _ in stored] == ["user", "assistant"] * 20
    for (_, question), (_, answer) in zip(stored[::2], stored[1::2], strict=True):
        assert answer.startswith(f"Echo: {question} ")
    # every request reached the upstream with exactly the turns stored before it
    for request in fake_upstream.requests:
        users = [m for m in request.json["messages"] if m["role"] == "user"]
        assert len(users) == len({m["content"] for m in users})


def test_a_killed_process_loses_its_lease_and_another_continues_the_turn(
    database_url, fake_upstream
):
    from tests.fakes import Fault

    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    env = {"MEMPROXY_AGENT_LEASE_TTL_S": "2", "MEMPROXY_UPSTREAM_MAX_RETRIES": "0"}
    question = [{"role": "user", "content": "a question for a dying server"}]
    headers = {"X-Agent-Id": "crash"}
    victim = run_memproxy_subprocess(args, env=env)
    with run_memproxy_subprocess(args, env=env) as survivor:
        fake_upstream.push(Fault.delay(30))
        pending = threading.Thread(target=lambda: _quietly(lambda: openai.OpenAI(
            base_url=victim.base_url, api_key=secrets.CLIENT_KEY, max_retries=0, timeout=30,
        ).chat.completions.create(model="gpt-4o-mini", messages=question,
                                  extra_headers=headers)))
        pending.start()
        _wait_for(lambda: len(fake_upstream.requests) == 1)
        victim.kill()  # SIGKILL while the turn holds the conversation's lease
        pending.join()

        stored = storage.roles_and_texts(storage.transcript(database_url, "crash"))
        assert stored == [("user", "a question for a dying server")]
        assert storage.last_turn(database_url, "crash").status == "open"  # unanswered

        reply = openai.OpenAI(base_url=survivor.base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
                              timeout=30).chat.completions.create(
            model="gpt-4o-mini", messages=question,
            extra_headers={**headers, "x-stainless-retry-count": "1"})
    assert reply.choices[0].message.content.startswith("Echo: a question for a dying server")
    stored = storage.roles_and_texts(storage.transcript(database_url, "crash"))
    assert stored == [("user", "a question for a dying server"),
                      ("assistant", reply.choices[0].message.content)]


def _quietly(call):
    try:
        call()
    except Exception:
        pass  # the server was killed under this request: the error is the point


def _wait_for(condition, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_three_processes_ninety_requests_three_conversations(database_url, fake_upstream):
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    servers = [run_memproxy_subprocess(args, env={}) for _ in range(3)]
    try:
        errors = run_concurrently(90, lambda i: openai.OpenAI(
            base_url=servers[i % 3].base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
            timeout=120,
        ).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"m{i}"}],
            extra_headers={"X-Agent-Id": "fleet", "X-Conversation-Id": f"c{i % 3}"}))
    finally:
        for server in servers:
            server.stop()
    assert errors == []
    for c in range(3):
        stored = storage.roles_and_texts(storage.transcript(database_url, "fleet", f"c{c}"))
        assert [r for r, _ in stored] == ["user", "assistant"] * 30
        asked = [q for _, q in stored[::2]]
        assert sorted(asked) == sorted(f"m{i}" for i in range(c, 90, 3))
        for (_, question), (_, answer) in zip(stored[::2], stored[1::2], strict=True):
            assert answer.startswith(f"Echo: {question} (saw ")


def test_two_processes_taking_turns_in_any_order_each_see_every_turn(database_url,
                                                                       fake_upstream):
    """One conversation, one client sending only its new message, served by two processes in
    a mixed order (on Postgres a process plans a turn ahead from its own last turn there:
    turn/ahead.py). Each answer must have seen every question before it, whichever process
    stored it, and each question and answer is stored once, in order, on one path."""
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as a, run_memproxy_subprocess(args, env={}) as b:
        clients = {name: openai.OpenAI(base_url=server.base_url, api_key=secrets.CLIENT_KEY,
                                       max_retries=0, timeout=60)
                   for name, server in (("a", a), ("b", b))}
        order = "aabbabaaab"
        for n, name in enumerate(order, 1):
            reply = clients[name].chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{n}"}],
                extra_headers={"X-Agent-Id": "pair", "X-Conversation-Id": "one"})
            assert reply.choices[0].message.content == f"Echo: q{n} (saw {n} user messages)"
    rows = storage.transcript(database_url, "pair", "one")
    assert storage.roles_and_texts(rows) == [
        pair for n in range(1, len(order) + 1)
        for pair in (("user", f"q{n}"), ("assistant", f"Echo: q{n} (saw {n} user messages)"))]
    assert [m.parent_seq for m in rows] == [0, *(m.seq for m in rows[:-1])]
