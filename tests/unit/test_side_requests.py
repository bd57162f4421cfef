"""Recognising chat UIs' side requests (docs/clients.md "Side requests"): every known prompt of
Open WebUI and LibreChat is one, no normal message is, and the patterns stay configurable."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from proxy.config import ConfigError, IdentitySettings, load_settings
from proxy.core.identity import is_auxiliary
from tests.side_requests import FROM_SOURCES, NOT_SIDE, RECORDED, assistant, system, user

DEFAULTS = IdentitySettings()
USER_PATTERNS = [re.compile(p) for p in DEFAULTS.auxiliary_patterns]
SYSTEM_PATTERNS = [re.compile(p) for p in DEFAULTS.auxiliary_system_patterns]


def side(messages, patterns=USER_PATTERNS, system_patterns=SYSTEM_PATTERNS):
    return is_auxiliary(messages, patterns, system_patterns)


@pytest.mark.parametrize("request_", RECORDED, ids=[r["name"] for r in RECORDED])
def test_every_recorded_open_webui_side_request_is_one(request_):
    assert side(request_["body"]["messages"])


def test_the_recording_holds_the_side_prompts_the_issue_names():
    first_words = {r["name"]: r["body"]["messages"][-1]["content"][:40] for r in RECORDED}
    assert first_words["emoji"].startswith("Your task is to reflect the speaker's")
    assert first_words["merge responses"].startswith("You have been provided with a set")
    # the emoji request names the chat it belongs to, the merge request names none
    by_name = {r["name"]: r["headers"] for r in RECORDED}
    assert "x-openwebui-chat-id" in by_name["emoji"]
    assert "x-openwebui-chat-id" not in by_name["merge responses"]


@pytest.mark.parametrize("name", sorted(FROM_SOURCES))
def test_side_prompts_from_the_uis_sources_are_side_requests(name):
    assert side(FROM_SOURCES[name])


@pytest.mark.parametrize("name", sorted(NOT_SIDE))
def test_normal_messages_are_never_side_requests(name):
    assert not side(NOT_SIDE[name])


def test_a_side_request_has_no_assistant_or_tool_message():
    """Side prompts carry their history as text; a history of messages is a conversation."""
    title = RECORDED[1]["body"]["messages"]
    assert side(title)
    assert not side([user("Hi"), assistant("Hello!"), *title])
    assert not side([*title, {"role": "tool", "tool_call_id": "c", "content": "x"}])


def test_only_the_last_user_message_counts():
    title = RECORDED[1]["body"]["messages"][0]
    assert not side([title, user("Thanks, and what is the weather?")])
    assert side([user("Thanks"), title])


def test_user_patterns_do_not_apply_to_system_messages():
    """A system prompt written as a task heading is an ordinary chat's instructions."""
    assert not side([system("### Task:\nTranslate everything to French."), user("Hello")])


def test_a_side_prompt_in_a_developer_message_counts_like_a_system_one():
    messages = FROM_SOURCES["open-webui tool choice"]
    as_developer = [{**messages[0], "role": "developer"}, messages[1]]
    assert side(as_developer)


def test_content_parts_are_read_as_text():
    parts = [{"type": "text", "text": "### Task:\nGenerate a concise title."}]
    assert side([{"role": "user", "content": parts}])


def test_leading_whitespace_is_allowed():
    assert side([user("\n  ### Task:\nGenerate 1-3 broad tags.")])


def test_no_patterns_means_no_side_requests():
    assert not is_auxiliary(RECORDED[0]["body"]["messages"], [], [])
    assert not is_auxiliary(FROM_SOURCES["librechat title (older clients)"], [], [])


def test_patterns_are_configurable_from_the_file_and_the_environment(tmp_path):
    path = tmp_path / "memproxy.toml"
    path.write_text("[identity]\nauxiliary_patterns = ['^Summarise:']\n"
                    "auxiliary_system_patterns = []\n")
    settings = load_settings(path, environ={}).identity
    assert settings.auxiliary_patterns == ["^Summarise:"]
    assert settings.auxiliary_system_patterns == []
    env = {"MEMPROXY_IDENTITY_AUXILIARY_SYSTEM_PATTERNS": '["^You write titles"]'}
    assert load_settings(environ=env).identity.auxiliary_system_patterns == ["^You write titles"]


@pytest.mark.parametrize("key", ["auxiliary_patterns", "auxiliary_system_patterns"])
def test_an_invalid_pattern_is_a_configuration_error(tmp_path, key):
    path = tmp_path / "memproxy.toml"
    path.write_text(f"[identity]\n{key} = ['(unclosed']\n")
    with pytest.raises(ConfigError, match=key):
        load_settings(path, environ={})


def test_config_example_lists_the_default_patterns():
    """The example repeats the defaults so that an admin can extend them: keep them equal."""
    example = Path(__file__).parents[2] / "config.example.toml"
    identity = tomllib.loads(example.read_text(encoding="utf-8"))["identity"]
    assert identity["auxiliary_patterns"] == DEFAULTS.auxiliary_patterns
    assert identity["auxiliary_system_patterns"] == DEFAULTS.auxiliary_system_patterns
