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
