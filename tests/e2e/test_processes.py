"""Several memproxy processes on one database: turns of a conversation never interleave."""

from __future__ import annotations

import threading

import openai

from tests import storage
from tests.servers import run_memproxy_subprocess


def test_two_processes_on_one_sqlite_file(tmp_path, fake_upstream):
    db = f"sqlite:///{tmp_path}/shared.db"
    args = ["--database-url", db, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as p1, run_memproxy_subprocess(args, env={}) as p2:
        errors = []

        def send(i):
            base = (p1 if i % 2 else p2).base_url
            try:
                openai.OpenAI(base_url=base, api_key="x", max_retries=0, timeout=60
                              ).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"m{i}"}],
                    extra_headers={"X-Agent-Id": "shared"})
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    stored = storage.roles_and_texts(storage.transcript(db, "shared"))
    assert [r for r, _ in stored] == ["user", "assistant"] * 20
    for (_, question), (_, answer) in zip(stored[::2], stored[1::2], strict=True):
        assert answer.startswith(f"Echo: {question} ")
    # every request reached the upstream with exactly the turns stored before it
    for request in fake_upstream.requests:
        users = [m for m in request.json["messages"] if m["role"] == "user"]
        assert len(users) == len({m["content"] for m in users})
