"""Models, embeddings, health, and the `memproxy keys` command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import openai
import pytest

from proxy.config import Settings
from tests import secrets
from tests.openapi_check import validate_embeddings, validate_error, validate_models

ROOT = Path(__file__).resolve().parents[2]


def test_models_are_the_upstreams_list(make_proxy, fake_upstream):
    proxy = make_proxy()
    models = proxy.client().models.list()
    validate_models(models.model_dump(exclude_unset=True))
    assert [m.id for m in models.data] == fake_upstream.model_ids()
    # cached: a second listing does not reach the upstream again
    before = len(fake_upstream.all_requests)
    assert httpx.get(f"{proxy.url}/models").json()["data"][0]["id"] == "gpt-4o-mini"
    assert len(fake_upstream.all_requests) == before


def test_embeddings_are_forwarded(make_proxy, fake_upstream):
    proxy = make_proxy()
    result = proxy.client().embeddings.create(model="text-embedding-3-small",
                                              input=["hello", "world"], encoding_format="float")
    validate_embeddings(result.model_dump(exclude_unset=True))
    assert len(result.data) == 2 and len(result.data[0].embedding) == fake_upstream.embedding_dim


def test_upstream_key_replaces_the_clients(make_proxy, fake_upstream):
    proxy = make_proxy({"upstream": {"api_key": secrets.UPSTREAM_KEY},
                        "auth": {"keys": {secrets.TENANT_A_KEY: "t"}}})
    client = proxy.client(api_key=secrets.TENANT_A_KEY)
    client.models.list()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"X-Agent-Id": "k"})
    seen = {r.headers.get("authorization") for r in fake_upstream.all_requests}
    assert seen == {f"Bearer {secrets.UPSTREAM_KEY}"}


@pytest.mark.parametrize("forward", [True, False], ids=["forward", "configured-key"])
def test_forward_client_key(make_proxy, fake_upstream, forward):
    """`[upstream] forward_client_key`: the client's own Authorization reaches the upstream
    (stateful turns, pass-through, models, embeddings) only when true; otherwise the
    configured key does and the client's key never leaves memproxy."""
    proxy = make_proxy({"upstream": {"forward_client_key": forward,
                                     "api_key": secrets.UPSTREAM_KEY, "models_cache_s": 0}})
    client = proxy.client(api_key=secrets.USER_OWN_KEY)
    question = [{"role": "user", "content": "x"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=question,
                                   extra_headers={"X-Agent-Id": "k"})
    client.chat.completions.create(model="gpt-4o-mini", messages=question)  # pass-through
    client.models.list()
    client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    expected = f"Bearer {secrets.USER_OWN_KEY if forward else secrets.UPSTREAM_KEY}"
    chat = [r.headers.get("authorization") for r in fake_upstream.requests]
    assert len(chat) == 2 and set(chat) == {expected}
    listed = [r for r in fake_upstream.all_requests if r.path == "/v1/models"]
    embedded = [r for r in fake_upstream.all_requests if r.path == "/v1/embeddings"]
    assert listed[-1].headers.get("authorization") == expected
    assert [r.headers.get("authorization") for r in embedded] == [expected]
    if not forward:
        assert all(secrets.USER_OWN_KEY not in str(r.headers) for r in fake_upstream.all_requests)


def test_models_need_a_key_when_auth_is_on(make_proxy, fake_upstream):
    proxy = make_proxy({"auth": {"keys": {secrets.TENANT_A_KEY: "t"}}})
    with pytest.raises(openai.AuthenticationError):
        proxy.client(api_key=secrets.WRONG_KEY).models.list()
    response = httpx.get(f"{proxy.base_url}/models")
    assert response.status_code == 401
    validate_error(response.json())


def test_health(make_proxy, fake_upstream):
    proxy = make_proxy()
    assert httpx.get(f"{proxy.url}/health/liveliness").json() == {"status": "ok"}
    ready = httpx.get(f"{proxy.url}/health/readiness")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "upstream": "ok"}


def test_readiness_reports_an_unreachable_upstream(make_proxy):
    from tests.servers import refusing_port

    with refusing_port() as port:
        proxy = make_proxy({"upstream": {"base_url": f"http://127.0.0.1:{port}/v1",
                                         "max_retries": 0}})
        ready = httpx.get(f"{proxy.url}/health/readiness")
    assert ready.status_code == 503
    assert ready.json()["checks"]["upstream"].startswith("error")
    assert ready.json()["checks"]["database"] == "ok"


def test_keys_add_creates_a_working_key(tmp_path, fake_upstream):
    from tests.servers import run_memproxy_subprocess

    db = f"sqlite:///{tmp_path}/k.db"
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "keys", "add", "team-a", "--database-url", db],
        capture_output=True, text=True, check=True, cwd=ROOT)
    key = out.stdout.strip()
    assert key.startswith("mp-") and "team-a" in out.stderr
    args = ["--database-url", db, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as proc:
        good = openai.OpenAI(base_url=proc.base_url, api_key=key, max_retries=0)
        good.chat.completions.create(model="gpt-4o-mini",
                                     messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"X-Agent-Id": "a"})
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=proc.base_url, api_key=secrets.WRONG_KEY, max_retries=0
                          ).models.list()
    assert key not in (tmp_path / "k.db").read_bytes().decode("latin-1")


def test_config_example_documents_every_key():
    text = (ROOT / "config.example.toml").read_text()
    data = tomllib.loads(text)
    Settings.model_validate(data)  # the example itself is valid
    for section, field in Settings.model_fields.items():
        assert f"[{section}" in text, section
        model = field.annotation
        for key in getattr(model, "model_fields", {}):
            documented = (f"{key} =", f"{key}\" =", f"[{section}.{key}")
            assert any(d in text for d in documented), f"{section}.{key}"


def test_serve_rejects_a_bad_config_clearly(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2 and "server.prot" in out.stderr
