"""`visible_hash`: what identifies a message across a client's resends, fast enough to hash a
whole resent history every turn."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import messages
from proxy.core.messages import _normal_text, visible_hash


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_whitespace_normalisation_is_the_regular_expressions(text):
    assert _normal_text(text) == re.sub(r"\s+", " ", text).strip()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["user", "assistant", "tool"]), st.text())
def test_a_cached_hash_is_the_hash_computed_anew(role, text):
    message = {"role": role, "content": text}
    first = visible_hash(message)
    messages._HASHES.clear()
    assert visible_hash(dict(message)) == first == visible_hash(message)


def test_only_what_the_hash_ignores_differs_between_cached_messages():
    plain = {"role": "assistant", "content": "ok"}
    named = {"role": "assistant", "content": " ok ", "name": "bot"}
    assert visible_hash(plain) == visible_hash(named)
    call = {"role": "assistant", "content": "ok", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert visible_hash(call) != visible_hash(plain)  # tool calls are never served cached
    assert visible_hash({"role": "user", "content": "ok"}) != visible_hash(plain)


def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(messages, "HASH_CACHE_SIZE", 10)
    messages._HASHES.clear()
    for i in range(25):
        visible_hash({"role": "user", "content": f"m{i}"})
    assert len(messages._HASHES) <= 10


def _call(arguments: str) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]}


def test_arguments_with_a_lone_surrogate_or_deep_nesting_still_hash():
    """Issue #21.6: JSON text inside the JSON body may hold what is no Unicode text (an escaped
    lone surrogate) or nest past the parser's depth; the message still gets a stable hash."""
    for arguments in ('{"q": "\\ud800"}', "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000):
        first = visible_hash(_call(arguments))
        assert first == visible_hash(_call(arguments))
        assert first != visible_hash(_call('{"q": "x"}'))


def test_valid_arguments_hash_as_before_surrogatepass():
    """surrogatepass changes nothing for valid text: the stored hashes stay valid."""
    import hashlib
    import json

    message = _call('{"q": "caf\\u00e9 🧠"}')
    raw = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode(
        messages.normal_form(message))
    assert visible_hash(message) == hashlib.sha256(raw.encode()).hexdigest()[:32]
