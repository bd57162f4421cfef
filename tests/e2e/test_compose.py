"""compose.yaml (memproxy + Open WebUI, a Postgres profile), checked without a Docker engine.

CI has none, so the file is checked the way the Dockerfile's steps are (.ci/docker-steps): it
must be valid against the compose specification's JSON schema (the copy check-jsonschema ships,
Apache-2.0, so no network), its variables must interpolate as Compose does, and what it wires
together must line up: every variable given to memproxy is one memproxy reads, Open WebUI's URL
names the memproxy service on the port memproxy listens on, the key Open WebUI sends is one
memproxy knows, the documented Postgres URL is the postgres service's. Then memproxy is started
for real with exactly the environment the file gives it (only the database path and the
upstream's address are this machine's), and a client configured as the file configures Open
WebUI has a stateful chat through it.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import openai
import pytest
import yaml

from proxy.cli.common import CLI_VARIABLES
from proxy.config import setting_variables, unknown_variables
from tests.servers import free_port, run_memproxy_subprocess

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
KEY = "mp-compose-test-key-4f1c"
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error}, $VAR and $$, in every string of the file."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1) or match.group(4), match.group(2), match.group(3)
        present = name in environ
        usable = present and (environ[name] != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return environ[name] if usable else arg
        if op in (":?", "?") and not usable:
            raise MissingVariable(f"{name}: {arg}")
        return environ.get(name, "")

    return VARIABLE.sub(one, value)


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def dockerfile_env_and_cmd() -> tuple[dict[str, str], list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in line[4:].split()))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return env, cmd


ENVIRON = {"MEMPROXY_KEY": KEY, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}


def test_compose_yaml_is_valid_against_the_compose_specification() -> None:
    schema = compose_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    raw = compose_file()
    jsonschema.Draft202012Validator(schema).validate(raw)
    jsonschema.Draft202012Validator(schema).validate(interpolate(raw, ENVIRON))
    assert set(raw["services"]) == {"memproxy", "open-webui", "postgres"}
    assert raw["services"]["open-webui"]["image"].startswith("ghcr.io/open-webui/open-webui:")
    assert raw["services"]["postgres"]["profiles"] == ["postgres"]
    for name, service in raw["services"].items():  # named volumes are declared
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in raw["volumes"], (name, volume)


def test_the_file_refuses_to_start_without_a_key() -> None:
    with pytest.raises(MissingVariable, match="MEMPROXY_KEY"):
        interpolate(compose_file(), {})


def test_the_services_line_up() -> None:
    services = interpolate(compose_file(), ENVIRON)["services"]
    memproxy, webui, postgres = services["memproxy"], services["open-webui"], services["postgres"]
    docker_env, _ = dockerfile_env_and_cmd()
    env = {**docker_env, **memproxy["environment"]}
    # every MEMPROXY_* variable given is one memproxy reads (a typo would be ignored)
    known = set(setting_variables()) | set(CLI_VARIABLES)
    assert not unknown_variables(env, CLI_VARIABLES)
    assert all(v in known or v.startswith("OPENAI_") for v in memproxy["environment"]
               if v.startswith(("MEMPROXY_", "OPENAI_")))
    assert memproxy["build"] == "." and (ROOT / "Dockerfile").exists()
    # Open WebUI reaches memproxy by service name, on the port memproxy listens on
    url = urlsplit(webui["environment"]["OPENAI_API_BASE_URL"])
    port = int(env["MEMPROXY_SERVER_PORT"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "memproxy", port, "/v1")
    assert env["MEMPROXY_SERVER_HOST"] == "0.0.0.0"
    assert any(p.endswith(f":{port}") for p in memproxy["ports"])
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    assert webui["ports"] == ["127.0.0.1:3000:8080"]  # Open WebUI listens on 8080 inside
    # the key Open WebUI sends is one of memproxy's (so memproxy is not open on 0.0.0.0)
    keys = json.loads(env["MEMPROXY_AUTH_KEYS"])
    assert webui["environment"]["OPENAI_API_KEY"] == KEY and keys == {KEY: "openwebui"}
    assert webui["environment"]["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    assert webui["depends_on"]["memproxy"]["condition"] == "service_healthy"
    # the Postgres URL the file documents is the postgres service's
    documented = re.search(r"MEMPROXY_DATABASE_URL=(postgresql://\S+)", COMPOSE.read_text())
    pg = urlsplit(documented.group(1))
    pg_env = postgres["environment"]
    assert (pg.username, pg.password, pg.hostname, pg.port, pg.path) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], "postgres", 5432,
        "/" + pg_env["POSTGRES_DB"])
    assert memproxy["depends_on"]["postgres"] == {"condition": "service_healthy",
                                                  "required": False}
    check = postgres["healthcheck"]["test"]
    assert pg_env["POSTGRES_USER"] in check and pg_env["POSTGRES_DB"] in check
    with_pg = interpolate(compose_file(), {**ENVIRON, "MEMPROXY_DATABASE_URL":
                                           documented.group(1)})["services"]["memproxy"]
    assert with_pg["environment"]["MEMPROXY_DATABASE_URL"] == documented.group(1)
    assert memproxy["environment"]["MEMPROXY_DATABASE_URL"] == docker_env["MEMPROXY_DATABASE_URL"]


def test_memproxy_starts_as_composed_and_open_webui_has_a_stateful_chat(
        fake_upstream, database_url, tmp_path) -> None:
    services = interpolate(compose_file(), {**ENVIRON, "OPENAI_BASE_URL": fake_upstream.url}
                           )["services"]
    memproxy, webui = services["memproxy"], services["open-webui"]
    _, cmd = dockerfile_env_and_cmd()
    command = memproxy.get("command") or cmd
    assert command[:2] == ["memproxy", "serve"]
    env = {**memproxy["environment"], "MEMPROXY_DATABASE_URL": database_url}
    port = free_port()
    args = [*command[2:], "--host", env["MEMPROXY_SERVER_HOST"], "--port", str(port)]
    with run_memproxy_subprocess(args, env=env, cwd=tmp_path) as proc:
        base = urlsplit(webui["environment"]["OPENAI_API_BASE_URL"])
        local = f"http://127.0.0.1:{port}{base.path}"
        client = openai.OpenAI(base_url=local, api_key=webui["environment"]["OPENAI_API_KEY"],
                               max_retries=0)

        def chat(text: str, chat_id: str) -> str:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                extra_headers={"X-OpenWebUI-User-Id": "user-1", "X-OpenWebUI-Chat-Id": chat_id})
            return reply.choices[0].message.content or ""

        assert chat("My name is Ada", "chat-1") == "Got it, I'll remember that."
        assert chat("What is my name?", "chat-2") == "Your name is Ada."
        assert [m.id for m in client.models.list()]  # Open WebUI's model list, passed through
        denied = httpx.post(f"{local}/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert denied.status_code == 401  # not open: a key is needed
        assert "unknown environment variable" not in proc.output()
        assert "0.0.0.0" in proc.output()
