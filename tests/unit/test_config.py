"""Settings: file, environment, fallbacks, flags and their precedence."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_settings, setting_variables, unknown_variables
from tests import secrets


def write(tmp_path, text):
    path = tmp_path / "memproxy.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_contract():
    s = load_settings(environ={})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)
    assert s.database.url == "sqlite:///memproxy.db"
    assert s.upstream.base_url == "https://api.openai.com/v1"
    assert s.agent.max_steps == 8
    assert list(s.agent.blocks) == ["persona", "human"]
    assert s.memory.default_context_window == 8192
    assert "X-OpenWebUI-User-Id" in s.identity.agent_headers


def test_openai_variables_are_fallbacks_below_the_file(tmp_path):
    env = {"OPENAI_BASE_URL": "http://a/v1", "OPENAI_API_KEY": secrets.SECRET_FROM_ENV}
    assert load_settings(environ=env).upstream.base_url == "http://a/v1"
    path = write(tmp_path, '[upstream]\nbase_url = "http://file/v1"\n')
    s = load_settings(path, environ=env)
    assert s.upstream.base_url == "http://file/v1" and s.upstream.api_key == secrets.SECRET_FROM_ENV


def test_memproxy_variables_override_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path, '[database]\nurl = "sqlite:///file.db"\n[server]\nport = 1\n')
    env = {"MEMPROXY_DATABASE_URL": "sqlite:///env.db", "MEMPROXY_SERVER_PORT": "2",
           "MEMPROXY_UPSTREAM_API_KEY": secrets.UPSTREAM_KEY,
           "MEMPROXY_AUTH_ADMIN_KEYS": f'["{secrets.ADMIN_KEY}"]'}
    s = load_settings(path, environ=env)
    assert s.database.url == "sqlite:///env.db" and s.server.port == 2
    assert s.upstream.api_key == secrets.UPSTREAM_KEY and s.auth.admin_keys == [secrets.ADMIN_KEY]
    s = load_settings(path, environ=env, overrides={"server": {"port": 3}})
    assert s.server.port == 3


def test_env_references_in_the_file(tmp_path):
    path = write(tmp_path, '[upstream]\napi_key = "env:MY_KEY"\n')
    env = {"MY_KEY": secrets.SECRET_FROM_ENV}
    assert load_settings(path, environ=env).upstream.api_key == secrets.SECRET_FROM_ENV
    with pytest.raises(ConfigError, match="MY_KEY"):
        load_settings(path, environ={})


def test_tables_for_keys_models_and_blocks(tmp_path):
    path = write(tmp_path, f"""
[auth.keys]
"{secrets.TENANT_A_KEY}" = "alice"
"sha256:abcd" = "bob"

[models."gpt-4o*"]
context_window = 128000

[agent.blocks.persona]
value = "I am terse."
limit = 2000

[agent.blocks.project]
description = "The project we work on"
""")
    s = load_settings(path, environ={})
    assert s.auth.keys == {secrets.TENANT_A_KEY: "alice", "sha256:abcd": "bob"}
    assert s.models["gpt-4o*"].context_window == 128000
    assert s.agent.blocks["persona"].value == "I am terse."
    assert s.agent.blocks["project"].limit == 5000


@pytest.mark.parametrize("text, fragment", [
    ("[server]\nprot = 1\n", "server.prot"),
    ("[server]\nport = 'x'\n", "server.port"),
    ("[nonsense]\n", "nonsense"),
    ("not toml ===", "not valid TOML"),
])
def test_mistakes_are_reported_with_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(write(tmp_path, text), environ={})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("key, value, fragment", [
    ("upstream", {"base_url": "notaurl"}, "upstream.base_url: must be an http:// or https://"),
    ("upstream", {"base_url": "http://:8080/v1"}, "upstream.base_url: must be an http://"),
    ("upstream", {"base_url": "http://h:port/v1"}, "upstream.base_url: invalid port"),
    ("upstream", {"fallbacks": [{"base_url": "localhost:11434"}]},
     "upstream.fallbacks.0.base_url: must be an http://"),
    ("embeddings", {"base_url": "ftp://h/v1"}, "embeddings.base_url: must be an http://"),
    ("database", {"url": "mysql://u@h/db"},
     "database.url: unsupported database URL scheme 'mysql'"),
    ("database", {"url": ""}, "database.url: is empty"),
])
def test_urls_are_checked_when_settings_load(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={key: value})
    assert fragment in str(info.value)


def test_a_bad_url_in_an_error_is_shown_without_credentials():
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={"upstream": {
            "base_url": f"htp://user:{secrets.UPSTREAM_KEY}@host/v1?key={secrets.UPSTREAM_KEY}"}})
    assert "'htp://host/v1'" in str(info.value) and secrets.UPSTREAM_KEY not in str(info.value)


def test_good_urls_load():
    s = load_settings(environ={"OPENAI_BASE_URL": "http://localhost:11434/v1"}, overrides={
        "database": {"url": "postgresql://memproxy@db:5432/memproxy"},
        "embeddings": {"base_url": "https://[::1]:8443/v1"}})
    assert s.upstream.base_url == "http://localhost:11434/v1"
    assert load_settings(environ={}, overrides={"database": {"url": "data/m.db"}}).database.url


def test_unknown_memproxy_variables_are_named_with_the_closest_known_one():
    env = {"MEMPROXY_DATABSE_URL": "x", "MEMPROXY_PORT": "1", "MEMPROXY_UPSTREAM_KEY": "k",
           "MEMPROXY_SOMETHING_ELSE": "x", "MEMPROXY_DATABASE_URL": "sqlite:///m.db",
           "MEMPROXY_logging_level": "DEBUG", "MEMPROXY_URL": "http://h", "OTHER_VAR": "x"}
    assert unknown_variables(env, also_known=["MEMPROXY_URL"]) == [
        "unknown environment variable MEMPROXY_DATABSE_URL is ignored "
        "(did you mean MEMPROXY_DATABASE_URL?)",
        "unknown environment variable MEMPROXY_PORT is ignored "
        "(did you mean MEMPROXY_SERVER_PORT?)",
        "unknown environment variable MEMPROXY_SOMETHING_ELSE is ignored",
        "unknown environment variable MEMPROXY_UPSTREAM_KEY is ignored "
        "(did you mean MEMPROXY_UPSTREAM_API_KEY?)",
    ]
    # every variable the settings read is known
    assert unknown_variables({name: "x" for name in setting_variables()}) == []
    assert "MEMPROXY_UPSTREAM_FALLBACKS" in setting_variables()
