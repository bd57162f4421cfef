"""The passage splitter (`proxy.core.chunking`) and the CLI's table formatter: pure functions,
checked on examples and with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cli.table import format_table, one_line
from proxy.core.chunking import split_text

# Text with the structure the splitter looks for: words, sentences, lines, blank lines, headings.
_pieces = st.sampled_from(
    ["word", "other", "x", "Sentence ends.", "Why?", " ", "  ", "\n", "\n\n", "\n\n\n",
     "\n# Heading\n", "\n## Sub heading\n", "\t", "é", "日本語", "#", "a.b", "\r\n"]
)
documents = st.lists(_pieces, max_size=300).map("".join) | st.text(max_size=600)


def check_invariants(text: str, chunk_chars: int, overlap: int) -> None:
    chunks = split_text(text, chunk_chars, overlap)
    if not text:
        assert chunks == []
        return
    covered = [False] * len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]
        assert 0 < chunk.end - chunk.start <= chunk_chars
        for i in range(chunk.start, chunk.end):
            covered[i] = True
    assert all(covered), "every character is in some chunk"
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for previous, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.start == previous.end - overlap, "consecutive chunks share exactly `overlap`"
        assert nxt.end > previous.end, "chunks advance"


@settings(max_examples=300, deadline=None)
@given(text=documents, chunk_chars=st.integers(1, 120), data=st.data())
def test_chunks_cover_the_text_with_bounded_size_and_exact_overlap(text, chunk_chars, data):
    overlap = data.draw(st.integers(0, chunk_chars - 1))
    check_invariants(text, chunk_chars, overlap)


@pytest.mark.parametrize("chunk_chars,overlap", [(1, 0), (2, 1), (5, 4), (1500, 200)])
def test_extreme_sizes_keep_the_invariants(chunk_chars, overlap):
    text = "Alpha beta. Gamma delta!\n\n# Head\nEpsilon " * 40
    check_invariants(text, chunk_chars, overlap)


def test_a_short_text_is_one_chunk():
    chunks = split_text("Just a note.", 100, 10)
    assert [(c.start, c.end, c.text) for c in chunks] == [(0, 12, "Just a note.")]


def test_chunks_end_before_headings_rather_than_mid_section():
    section = "Some words in a sentence. " * 3
    text = f"# One\n{section}\n# Two\n{section}\n# Three\n{section}"
    chunks = split_text(text, 120, 0)
    starts = [c.text.split("\n", 1)[0] for c in chunks]
    assert starts == ["# One", "# Two", "# Three"]


def test_paragraph_boundaries_win_over_sentence_and_word_boundaries():
    first = "First paragraph has a sentence. And another one here"
    second = "Second paragraph continues with more words to split"
    text = f"{first}\n\n{second}"
    chunks = split_text(text, len(first) + 10, 0)
    assert chunks[0].text == first + "\n\n"
    assert chunks[1].text == second


def test_text_without_any_boundary_is_cut_at_the_limit():
    chunks = split_text("x" * 25, 10, 3)
    assert [(c.start, c.end) for c in chunks] == [(0, 10), (7, 17), (14, 24), (21, 25)]


@pytest.mark.parametrize("chunk_chars,overlap", [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_impossible_sizes_are_rejected(chunk_chars, overlap):
    with pytest.raises(ValueError):
        split_text("some text", chunk_chars, overlap)


# -- the table formatter ----------------------------------------------------------------------


def test_table_aligns_columns_and_right_aligns_numbers():
    out = format_table(["ID", "MESSAGES"], [["alice", 7], ["bob", 1234]])
    assert out.splitlines() == [
        "ID     MESSAGES",
        "alice         7",
        "bob        1234",
    ]


def test_table_without_rows_says_so():
    assert format_table(["A", "B"], [], empty="(no agents)").splitlines() == ["A  B", "(no agents)"]


def test_table_cells_are_single_line_and_cut():
    out = format_table(["TEXT"], [["line one\nline two"], ["x" * 100]], max_width=10)
    lines = out.splitlines()
    assert lines[1] == "line one …"
    assert lines[2] == "x" * 9 + "…"
    assert len(lines) == 3


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError):
        format_table(["A", "B"], [["only one"]])


cells = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=30), st.none())


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 4).flatmap(
    lambda n: st.lists(st.lists(cells, min_size=n, max_size=n), max_size=8)))
def test_table_rows_are_one_line_each_and_columns_line_up(rows):
    width = len(rows[0]) if rows else 2
    headers = [f"H{i}" for i in range(width)]
    out = format_table(headers, rows, max_width=12)
    lines = out.split("\n")
    assert len(lines) == 1 + max(len(rows), 1)
    if not rows:
        return
    # Each column starts at the same offset on every line: cell i+1 begins after the padded
    # width of cells 0..i plus two spaces, and no cell is wider than the cut.
    widths = [max([len(h)] + [len(one_line(r[i], 12)) for r in rows])
              for i, h in enumerate(headers)]
    for line in lines:
        assert len(line) <= sum(widths) + 2 * (width - 1)
        assert "\n" not in line and "\r" not in line
    for row in rows:
        for cell in row:
            assert len(one_line(cell, 12)) <= 12
