"""Masking keys in relayed bytes (`proxy/upstream/masking.py`): same length, across chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from proxy.upstream.masking import Masker

KEYS = ["sk-upstream-0123456789abcdef", "sk-fallback-fedcba9876543210", "sk-upstream-0123"]
TEXT = st.binary(max_size=80).map(lambda b: b.replace(b"sk-", b"xx-"))


def _run(masker: Masker, chunks: list[bytes]) -> list[bytes]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[bytes]:
        return [piece async for piece in masker.stream(source())]

    return asyncio.run(collect())


@st.composite
def quoted_in_chunks(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    parts = [draw(TEXT)]
    for _ in range(draw(st.integers(0, 4))):
        parts += [draw(st.sampled_from(KEYS)).encode(), draw(TEXT)]
    whole = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    return whole, chunks


@given(quoted_in_chunks())
def test_a_stream_is_masked_as_the_whole_would_be_whatever_the_chunks(case):
    whole, chunks = case
    masker = Masker(KEYS)
    out = b"".join(_run(masker, chunks))
    assert out == masker.mask(whole)
    assert len(out) == len(whole)  # a Content-Length stays true
    assert not any(key.encode() in out for key in KEYS)


@given(TEXT)
def test_bytes_without_a_key_are_untouched(data):
    assert Masker(KEYS).mask(data) == data


def test_the_mask_keeps_the_length_and_only_the_prefix():
    masker = Masker(["sk-upstream-0123456789abcdef"])
    assert masker.mask(b"bad key sk-upstream-0123456789abcdef!") == (
        b"bad key sk-" + b"*" * 25 + b"!")
    assert masker.mask_text("Bearer sk-upstream-0123456789abcdef") == "Bearer sk-" + "*" * 25


def test_a_longer_key_containing_a_shorter_one_is_masked_whole():
    masker = Masker(["sk-upstream-0123", "sk-upstream-0123456789abcdef"])
    assert masker.mask(b"sk-upstream-0123456789abcdef") == b"sk-" + b"*" * 25


def test_an_event_is_never_held_back_when_it_cannot_begin_a_key():
    masker = Masker(KEYS)
    pieces = _run(masker, [b"data: {}\n\n", b"data: [DONE]\n\n"])
    assert pieces == [b"data: {}\n\n", b"data: [DONE]\n\n"]


def test_only_the_possible_start_of_a_key_is_held_back():
    masker = Masker(KEYS)
    pieces = _run(masker, [b"quota of sk-ups", b"tream-0123456789abcdef exceeded"])
    assert pieces[0] == b"quota of "
    assert b"".join(pieces) == b"quota of sk-" + b"*" * 25 + b" exceeded"


def test_short_or_missing_values_are_not_secrets():
    masker = Masker([None, "", "sk-1"])
    assert not masker and masker.mask(b"sk-1 is short") == b"sk-1 is short"
