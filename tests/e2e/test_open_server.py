"""An open server (no API key anywhere: every caller is an admin) is never exposed by accident
(docs/security.md "Open servers", docs/operations.md "Start-up"), through the real `memproxy
serve` process:

- bound to anything but loopback (0.0.0.0, ::, a LAN address; by flag, config or environment)
  with no key, `serve` stops before it listens: one line, exit status 2, saying how to create a
  key and how to allow an open server on purpose;
- `--allow-open` (or `[server] allow_open`, or `MEMPROXY_SERVER_ALLOW_OPEN`) starts it, and the
  banner and a warning say it is open to anyone who can reach it;
- one key (in the config or stored by `memproxy keys add`) is enough to bind 0.0.0.0;
- loopback is unaffected: open, quiet, as before.

Why: the Dockerfile binds 0.0.0.0, so `docker run -p 8080:8080` used to serve every agent, with
admin rights, to whoever could reach the port, silently.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from proxy.cli.startup import is_loopback
from tests import secrets
from tests.e2e.test_startup import banner_rows, serve_fails
from tests.servers import run_memproxy_subprocess

OPEN_ROW = ("OPEN to anyone who can reach it (no API keys, --allow-open): every caller is an "
            "admin of the tenant 'default'")
LOOPBACK_OPEN_ROW = "open (no API keys: every caller is the tenant 'default')"


def refusal(host: str) -> str:
    return (f"memproxy: refusing to listen on {host} with no API keys: anyone who can reach it "
            "would be an admin of every agent. Create a key with `memproxy keys add TENANT` "
            "(same --config / --database-url), or serve it open on purpose with --allow-open "
            "([server] allow_open = true, MEMPROXY_SERVER_ALLOW_OPEN=true)")


def warnings_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if " WARNING memproxy: " in line]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "[::1]",
                                  "LocalHost."])
def test_loopback_names(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "[::]", "192.168.1.5", "10.0.0.1",
                                  "fe80::1", "example.com", "localhost.example.com"])
def test_reachable_names(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_an_exposed_open_server_is_refused(host, tmp_path):
    """Refused before binding, so even an address this machine does not have is refused for
    this reason (192.0.2.1 is reserved for documentation)."""
    line = serve_fails(["--host", host, "--database-url", f"sqlite:///{tmp_path}/m.db"],
                       tmp_path)
    assert line == refusal(host)


def test_a_host_from_config_or_environment_is_refused_too(tmp_path):
    config = tmp_path / "memproxy.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nallow_open = false\n')
    url = f"sqlite:///{tmp_path}/m.db"
    assert serve_fails(["--config", str(config), "--database-url", url], tmp_path) \
        == refusal("0.0.0.0")
    assert serve_fails(["--database-url", url], tmp_path,
                       env={"MEMPROXY_SERVER_HOST": "0.0.0.0"}) == refusal("0.0.0.0")
    # the Dockerfile's environment, with an empty config key set: still no key
    config.write_text('[server]\nhost = "0.0.0.0"\n[auth]\nadmin_keys = []\n')
    assert serve_fails(["--config", str(config), "--database-url", url], tmp_path) \
        == refusal("0.0.0.0")


@pytest.mark.parametrize("how", ["flag", "config", "environment"])
def test_allow_open_starts_and_says_it_is_open(how, fake_upstream, tmp_path):
    args = ["--database-url", f"sqlite:///{tmp_path}/m.db", "--upstream-url",
            fake_upstream.url, "--host", "0.0.0.0"]
    env: dict[str, str] = {}
    if how == "flag":
        args.append("--allow-open")
    elif how == "config":
        (tmp_path / "memproxy.toml").write_text("[server]\nallow_open = true\n")
        args += ["--config", str(tmp_path / "memproxy.toml")]
    else:
        env["MEMPROXY_SERVER_ALLOW_OPEN"] = "true"
    with run_memproxy_subprocess(args, env=env) as proc:
        # open for real: no key, admin rights (every tenant's agents are listed)
        response = httpx.get(f"http://127.0.0.1:{proc.port}/v1/agents", timeout=10)
        assert response.status_code == 200, response.text
    assert banner_rows(proc.output())["auth"] == OPEN_ROW
    assert warnings_in(proc.output())[0].endswith(
        f"this server is open to anyone who can reach 0.0.0.0:{proc.port}: there is no API "
        "key, so every caller is an admin (--allow-open); create one with "
        "`memproxy keys add TENANT`")


def test_a_stored_key_is_enough_to_listen_everywhere(database_url, fake_upstream, tmp_path,
                                                     capsys):
    """The Dockerfile's way: `memproxy keys add` against the same database, then serve."""
    assert main(["keys", "add", "team-a", "--database-url", database_url]) == 0
    key = capsys.readouterr().out.strip()
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url,
            "--host", "0.0.0.0"]
    with run_memproxy_subprocess(args, env={}) as proc:
        agents = f"http://127.0.0.1:{proc.port}/v1/agents"
        assert httpx.get(agents, timeout=10).status_code == 401
        assert httpx.get(agents, headers={"Authorization": f"Bearer {key}"},
                         timeout=10).status_code == 200
    assert banner_rows(proc.output())["auth"] == "1 API key (1 from `memproxy keys add`)"
    assert not any("open to anyone" in w for w in warnings_in(proc.output()))


def test_a_config_key_is_enough_to_listen_everywhere(fake_upstream, tmp_path: Path):
    config = tmp_path / "memproxy.toml"
    config.write_text('[auth]\nadmin_keys = ["env:ADMIN"]\n')
    args = ["--config", str(config), "--database-url", f"sqlite:///{tmp_path}/m.db",
            "--upstream-url", fake_upstream.url, "--host", "0.0.0.0"]
    with run_memproxy_subprocess(args, env={"ADMIN": secrets.ADMIN_KEY}, cwd=tmp_path) as proc:
        agents = f"http://127.0.0.1:{proc.port}/v1/agents"
        assert httpx.get(agents, timeout=10).status_code == 401
    assert banner_rows(proc.output())["auth"] == "1 API key (1 admin)"
    assert not any("open to anyone" in w for w in warnings_in(proc.output()))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_stays_open_without_asking(host, fake_upstream, tmp_path):
    args = ["--database-url", f"sqlite:///{tmp_path}/m.db", "--upstream-url",
            fake_upstream.url, "--host", host]
    with run_memproxy_subprocess(args, env={}) as proc:
        response = httpx.get(f"http://127.0.0.1:{proc.port}/v1/agents", timeout=10)
        assert response.status_code == 200, response.text
    assert banner_rows(proc.output())["auth"] == LOOPBACK_OPEN_ROW
    assert not any("open to anyone" in w for w in warnings_in(proc.output()))
