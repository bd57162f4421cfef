"""A/B mode (#6.5): the `[ab]` settings on the server, and the `memproxy ab` command.

Real servers (`make_proxy`, both backends), the scripted fake upstream, the official `openai`
SDK as the client.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from proxy.api.openai_routes import with_memory_aliases
from proxy.cli import main
from proxy.config import ConfigError, load_settings
from proxy.core.identity import memory_model
from tests.openapi_check import validate_chat_completion, validate_error, validate_models

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ab" / "facts.toml"
AB_ON = {"ab": {"expose_raw_models": True}}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads MEMPROXY_* / OPENAI_* variables: none from the developer's shell."""
    import os

    for name in list(os.environ):
        if name.startswith(("MEMPROXY_", "OPENAI_")):
            monkeypatch.delenv(name)


def ask(client: openai.OpenAI, model: str, text: str, agent: str | None = "ada", **kw):
    headers = {"X-Agent-Id": agent} if agent else {}
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers, **kw)


# -- pure parts -------------------------------------------------------------------------------


def test_memory_model_strips_only_a_real_suffix():
    assert memory_model("gpt-4o+memory", "+memory") == "gpt-4o"
    assert memory_model("gpt-4o", "+memory") is None
    assert memory_model("+memory", "+memory") is None  # no model left
    assert memory_model(None, "+memory") is None
    assert memory_model("a/b:mem", ":mem") == "a/b"


def test_aliases_follow_each_model_and_leave_the_cached_list_alone():
    upstream = {"object": "list", "data": [{"id": "a", "object": "model", "owned_by": "x"},
                                           {"id": "b", "object": "model", "owned_by": "y"}]}
    listed = with_memory_aliases(upstream, "+memory")
    assert [m["id"] for m in listed["data"]] == ["a", "a+memory", "b", "b+memory"]
    assert listed["data"][1]["owned_by"] == "x"
    assert [m["id"] for m in upstream["data"]] == ["a", "b"]
    assert with_memory_aliases({"error": "x"}, "+m") == {"error": "x"}


def test_an_empty_suffix_is_a_config_error():
    with pytest.raises(ConfigError, match="ab.memory_suffix"):
        load_settings(environ={}, overrides={"ab": {"memory_suffix": ""}})
    assert load_settings(environ={"MEMPROXY_AB_EXPOSE_RAW_MODELS": "true"}).ab.expose_raw_models


# -- the server -------------------------------------------------------------------------------


def test_models_list_both_names_when_enabled(make_proxy, fake_upstream):
    proxy = make_proxy(AB_ON)
    models = proxy.client().models.list()
    validate_models(models.model_dump(exclude_unset=True))
    assert [m.id for m in models.data] == [
        "gpt-4o-mini", "gpt-4o-mini+memory", "gpt-4o", "gpt-4o+memory"]


def test_memory_model_remembers_and_raw_model_does_not(make_proxy, fake_upstream):
    proxy = make_proxy(AB_ON)
    client = proxy.client()
    told = ask(client, "gpt-4o-mini+memory", "My name is Ada.")
    validate_chat_completion(told.model_dump(exclude_unset=True))
    remembered = ask(client, "gpt-4o-mini+memory", "What is my name?")
    assert remembered.choices[0].message.content == "Your name is Ada."

    fake_upstream.clear()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is my name?"}],
        extra_headers={"X-Agent-Id": "ada"})
    assert raw.parse().choices[0].message.content == "I don't know your name."
    assert "x-memproxy-agent-id" not in raw.headers  # pass-through, not a turn
    # exactly the client's body went upstream: no memory prompt, no memory tools
    assert fake_upstream.last.json == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is my name?"}]}

    # nothing of the raw exchange was stored: the next memory turn's prompt has the first
    # question once (from the memory turn) and not the raw one's answer
    ask(client, "gpt-4o-mini+memory", "hello")
    prompt = [m.get("content") or "" for m in fake_upstream.last.json["messages"]]
    assert sum("What is my name?" in c for c in prompt) == 1
    assert not any("I don't know your name." in c for c in prompt)


def test_the_upstream_never_sees_the_suffix(make_proxy, fake_upstream):
    proxy = make_proxy(AB_ON)
    client = proxy.client()
    ask(client, "gpt-4o+memory", "My name is Grace.")
    chunks = list(ask(client, "gpt-4o+memory", "What is my name?", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Your name is Grace."
    ask(client, "gpt-4o+memory", "hello", agent=None)  # no agent: pass-through, still stripped
    off = client.chat.completions.create(
        model="gpt-4o+memory", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Agent-Id": "ada", "X-Memory": "off"})
    assert off.choices[0].message.content.startswith("Echo: hi")
    models = [r.json["model"] for r in fake_upstream.requests]
    assert len(models) >= 5 and set(models) == {"gpt-4o"}


def test_memory_model_errors_are_openai_shaped(make_proxy, fake_upstream):
    proxy = make_proxy(AB_ON)
    bad_id = httpx.post(f"{proxy.base_url}/chat/completions", headers={"X-Agent-Id": "a b"},
                        json={"model": "gpt-4o+memory",
                              "messages": [{"role": "user", "content": "x"}]})
    assert bad_id.status_code == 400 and bad_id.json()["error"]["code"] == "invalid_id"
    validate_error(bad_id.json())
    no_messages = httpx.post(f"{proxy.base_url}/chat/completions",
                             headers={"X-Agent-Id": "ada"}, json={"model": "gpt-4o+memory"})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    validate_error(no_messages.json())
    # a body that is not JSON names no model: it is forwarded raw, the upstream judges it
    garbage = httpx.post(f"{proxy.base_url}/chat/completions", headers={"X-Agent-Id": "ada"},
                         content=b"{not json")
    assert garbage.status_code == 400 and fake_upstream.last.body == b"{not json"
    assert fake_upstream.requests and all(
        r.json is None or r.json.get("model") != "gpt-4o+memory" for r in fake_upstream.requests)


def test_disabled_by_default_nothing_changes(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    assert [m.id for m in client.models.list().data] == fake_upstream.model_ids()
    ask(client, "gpt-4o-mini", "My name is Ada.")
    assert ask(client, "gpt-4o-mini", "What is my name?").choices[0].message.content == \
        "Your name is Ada."
    ask(client, "gpt-4o-mini+memory", "plain", agent=None)
    assert fake_upstream.last.json["model"] == "gpt-4o-mini+memory"  # forwarded unchanged


# -- memproxy ab ------------------------------------------------------------------------------


def turn_blocks(out: str) -> dict[str, list[str]]:
    """Report lines after each `[session s · turn t]` header, up to the blank line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("[session "):
            current = blocks.setdefault(line.split("]")[0] + "]", [])
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def check_report(out: str) -> None:
    blocks = turn_blocks(out)
    assert list(blocks) == ["[session 1 · turn 1]", "[session 1 · turn 2]",
                            "[session 2 · turn 1]", "[session 3 · turn 1]"]
    for lines in blocks.values():
        assert all(" │ " in line or line.endswith(" │") for line in lines)
        assert lines[-1].count("prompt tok") == 2  # numbers for both runs
    last = blocks["[session 3 · turn 1]"]
    memory_side, raw_side = last[0].split(" │ ")
    assert memory_side.strip() == "Your name is Ada."
    assert raw_side.strip() == "I don't know your name."
    assert "totals with memory:" in out and "totals raw:" in out
    assert "$" in out.split("totals with memory:")[1]  # gpt-4o-mini has a known price


def test_ab_command_local_mode(database_url, fake_upstream, capsys):
    assert main(["migrate", "--database-url", database_url]) == 0  # local mode creates none
    code = main(["ab", str(EXAMPLE), "--database-url", database_url,
                 "--upstream-url", fake_upstream.url, "--model", "gpt-4o-mini", "--width", "120"])
    out = capsys.readouterr().out
    assert code == 0, out
    check_report(out)
    # with memory: every session a new conversation of one fresh agent; raw: no agent at all
    memory = [r for r in fake_upstream.requests if r.json.get("tools")]
    raw = [r for r in fake_upstream.requests if not r.json.get("tools")]
    assert len(raw) == 4 and len(memory) >= 4
    # within a session the raw app resends its history, across sessions it starts over
    assert [len(r.json["messages"]) for r in raw] == [2, 4, 2, 2]


def test_ab_command_against_a_server_with_ab_mode(make_proxy, fake_upstream, capsys, tmp_path):
    proxy = make_proxy(AB_ON)
    script = tmp_path / "s.json"
    script.write_text('{"title": "t", "sessions": [{"messages": ["My name is Ada."]},'
                      ' ["hello"], {"messages": ["What is my name?"]}]}')
    # plain names are raw on this server: the memory run must name the +memory model
    code = main(["ab", str(script), "--url", proxy.url, "--model", "gpt-4o",
                 "--memory-model", "gpt-4o+memory", "--price-in", "1", "--price-out", "2",
                 "--json"])
    assert code == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert [t["answer"] for t in report["memory"]["turns"]][-1] == "Your name is Ada."
    assert [t["answer"] for t in report["raw"]["turns"]][-1] == "I don't know your name."
    assert report["memory"]["totals"]["prompt_tokens"] > report["raw"]["totals"]["prompt_tokens"]
    assert report["memory"]["totals"]["cost_usd"] > 0
    # without --memory-model the memory run would silently be raw: the command refuses
    code = main(["ab", str(script), "--url", proxy.url, "--model", "gpt-4o"])
    assert code == 1 and "passed through without memory" in capsys.readouterr().err


def test_ab_command_local_mode_names_the_memory_model_itself(database_url, fake_upstream,
                                                            capsys, tmp_path):
    config = tmp_path / "memproxy.toml"
    config.write_text('[ab]\nexpose_raw_models = true\nmemory_suffix = ":mem"\n')
    assert main(["migrate", "--database-url", database_url]) == 0
    code = main(["ab", str(EXAMPLE), "--config", str(config), "--database-url", database_url,
                 "--upstream-url", fake_upstream.url, "--width", "120"])
    assert code == 0
    check_report(capsys.readouterr().out)
    assert {r.json["model"] for r in fake_upstream.requests} == {"gpt-4o-mini"}


def test_ab_command_rejects_bad_scripts(tmp_path, capsys):
    cases = {
        "empty.toml": ("", "`sessions` must be a non-empty list"),
        "bad.toml": ("sessions = [", "not a valid TOML script"),
        "blank.json": ('{"sessions": [{"messages": [""]}]}', "session 1 needs `messages`"),
        "missing.toml": (None, "cannot read"),
    }
    assert main(["migrate", "--database-url", f"sqlite:///{tmp_path}/x.db"]) == 0
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        code = main(["ab", str(path), "--database-url", f"sqlite:///{tmp_path}/x.db"])
        err = capsys.readouterr().err
        assert code == 1 and message in err and "Traceback" not in err, (name, err)


def test_ab_command_reports_upstream_errors_per_turn(make_proxy, fake_upstream, capsys,
                                                     tmp_path):
    from tests.fakes import Fault

    proxy = make_proxy()
    script = tmp_path / "s.toml"
    script.write_text('[[sessions]]\nmessages = ["one"]\n')
    fake_upstream.push(Fault.http(400, "That model is not allowed.", code="bad_model"))
    code = main(["ab", str(script), "--url", proxy.url, "--model", "mystery-model",
                 "--width", "100"])
    captured = capsys.readouterr()
    assert code == 1
    assert "ERROR: That model is not allowed." in captured.out
    assert "cost n/a" in captured.out and "no price known for mystery-model" in captured.out
