"""`memproxy keys add / ls / rm` (docs/cli.md "Keys", docs/security.md): a key's lifecycle.

`ls` shows fingerprints (never a key), `rm` takes one or --tenant, and a running server (a real
`memproxy serve` process) accepts an added key and refuses a removed one without a restart.
Why: `keys add` used to need a restart, and a key could not be listed or revoked at all.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from proxy.api.auth import hash_key
from proxy.cli import main
from tests.servers import run_memproxy_subprocess


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add_key(capsys, database_url: str, tenant: str, *flags: str) -> str:
    code, out, err = run(capsys, "keys", "add", tenant, "--database-url", database_url, *flags)
    assert code == 0, err
    return out.strip()


def test_ls_shows_fingerprints_and_rm_removes(database_url, capsys):
    a = add_key(capsys, database_url, "team-a")
    b = add_key(capsys, database_url, "team-b")
    add_key(capsys, database_url, "team-b")
    code, out, _ = run(capsys, "keys", "ls", "--database-url", database_url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FINGERPRINT", "TENANT", "ADMIN", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]][0] == [hash_key(a)[:12], "team-a"]
    assert a not in out and b not in out and hash_key(a) not in out  # never the key or hash
    code, out, _ = run(capsys, "keys", "ls", "--json", "--database-url", database_url)
    listed = json.loads(out)
    assert [(k["tenant"], k["admin"]) for k in listed] == [
        ("team-a", False), ("team-b", False), ("team-b", False)]
    # rm by fingerprint, then by tenant; unknown ones are one line, exit 1
    code, out, _ = run(capsys, "keys", "rm", hash_key(a)[:12], "--database-url", database_url)
    assert (code, out) == (0, f"removed key {hash_key(a)[:12]} (tenant 'team-a')\n")
    code, _, err = run(capsys, "keys", "rm", hash_key(a)[:12], "--database-url", database_url)
    assert code == 1
    assert err.endswith(f"memproxy: no stored key with fingerprint '{hash_key(a)[:12]}'\n")
    code, out, _ = run(capsys, "keys", "rm", "--tenant", "team-b", "--database-url",
                       database_url)
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = run(capsys, "keys", "ls", "--database-url", database_url)
    assert "(no keys stored" in out
    code, _, err = run(capsys, "keys", "rm", "--database-url", database_url)
    assert code == 2 and "FINGERPRINT" in err


def test_ls_never_creates_a_database(tmp_path, capsys):
    code, _, err = run(capsys, "keys", "ls", "--database-url", f"sqlite:///{tmp_path}/no.db")
    assert code == 2 and "no database at" in err
    assert not (tmp_path / "no.db").exists()


def agent_ids(port: int, key: str | None) -> tuple[int, list[str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"http://127.0.0.1:{port}/v1/agents", headers=headers, timeout=10)
    if response.status_code != 200:
        return response.status_code, []
    return 200, sorted(f"{a['tenant']}/{a['id']}" for a in response.json()["data"])


def wait_for(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@pytest.mark.parametrize("second_process", [False, True])
def test_running_servers_pick_up_added_and_removed_keys(database_url, fake_upstream, capsys,
                                                        second_process):
    """Two `memproxy serve` processes on one database: neither is restarted. Keys added while
    they run work on their first request (and close an open server at once); a removed key
    is refused by both within [auth] key_recheck_seconds (1 s here)."""
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    env = {"MEMPROXY_AUTH_KEY_RECHECK_SECONDS": "1"}
    with run_memproxy_subprocess(args, env=env) as one, \
            run_memproxy_subprocess(args, env=env) as two:
        ports = [one.port, two.port] if second_process else [one.port]
        created = httpx.post(f"http://127.0.0.1:{one.port}/v1/agents", json={"id": "ada"},
                             timeout=10)
        assert created.status_code in (200, 201), created.text
        assert agent_ids(one.port, None) == (200, ["default/ada"])  # open: every caller admin

        key = add_key(capsys, database_url, "team-a")
        for port in ports:
            # the new key is a tenant key at once (not an admin of 'default' meanwhile)
            assert agent_ids(port, key) == (200, [])
        assert agent_ids(one.port, None)[0] == 401  # closed now
        assert wait_for(lambda: agent_ids(two.port, None)[0] == 401, 5)  # the other: counted

        admin = add_key(capsys, database_url, "--admin")
        for port in ports:
            assert agent_ids(port, admin) == (200, ["default/ada"])
        code, out, _ = run(capsys, "keys", "ls", "--json", "--database-url", database_url)
        assert [(k["tenant"], k["admin"]) for k in json.loads(out)] == [("team-a", False),
                                                                         ("*", True)]

        assert run(capsys, "keys", "rm", "--tenant", "team-a", "--database-url",
                   database_url)[0] == 0
        for port in ports:
            assert wait_for(lambda port=port: agent_ids(port, key)[0] == 401, 5)
        # removing keys never re-opens a running server
        assert run(capsys, "keys", "rm", "--tenant", "*", "--database-url", database_url)[0] == 0
        for port in ports:
            assert wait_for(lambda port=port: agent_ids(port, admin)[0] == 401, 5)
            time.sleep(1.5)
            assert agent_ids(port, None)[0] == 401


def test_add_needs_a_tenant_or_admin(database_url, capsys):
    code, _, err = run(capsys, "keys", "add", "--database-url", database_url)
    assert code == 2 and "--admin" in err
    code, _, err = run(capsys, "keys", "add", "t", "--admin", "--database-url", database_url)
    assert code == 2


def test_first_key_says_what_becomes_of_the_open_servers_agents(database_url, fake_upstream,
                                                                capsys):
    """Agents made while the server was open belong to tenant 'default': `keys add` says so
    and names the adoption step, and a key for 'default' sees them (docs/security.md)."""
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as proc:
        assert httpx.post(f"http://127.0.0.1:{proc.port}/v1/agents", json={"id": "ada"},
                          timeout=10).status_code in (200, 201)
        code, key, err = run(capsys, "keys", "add", "team-a", "--database-url", database_url)
        assert code == 0
        assert "note: 1 agent(s) belong to tenant 'default'" in err
        assert "`memproxy keys add default`" in err
        assert agent_ids(proc.port, key.strip()) == (200, [])
        owner = add_key(capsys, database_url, "default")
        assert agent_ids(proc.port, owner) == (200, ["default/ada"])
        code, _, err = run(capsys, "keys", "add", "team-b", "--database-url", database_url)
        assert code == 0 and "note:" not in err  # 'default' has an owner now
