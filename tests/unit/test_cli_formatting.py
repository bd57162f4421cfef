"""The CLI's pure helpers: which passages a reload keeps, adds and removes (`load.plan_file`),
the overlap limit, and search scores as a share of the best hit (`table.relative_scores`)."""

from __future__ import annotations

import pytest

from proxy.cli.common import CliError
from proxy.cli.load import document_names, max_overlap, plan_file
from proxy.cli.table import relative_scores

TAGS = ["file:a.md", "hr"]


def stored(pk: int, text: str, tags: list[str] = TAGS) -> dict:
    return {"id": pk, "text": text, "tags": tags}


def test_plan_keeps_equal_passages_adds_new_and_removes_old():
    plan = plan_file(["one", "two", "three"], TAGS,
                     [stored(1, "one"), stored(2, "old two"), stored(3, "three")])
    assert (plan.add, plan.delete, plan.kept) == (["two"], [2], 2)


def test_plan_of_an_unchanged_file_changes_nothing():
    plan = plan_file(["one", "two"], TAGS, [stored(5, "two"), stored(4, "one")])
    assert (plan.add, plan.delete, plan.kept) == ([], [], 2)


def test_plan_counts_repeated_texts_one_by_one():
    """A text the file holds twice is stored twice; a third stored copy is surplus."""
    assert plan_file(["same", "same"], TAGS, [stored(1, "same")]).add == ["same"]
    plan = plan_file(["same", "same"], TAGS,
                     [stored(1, "same"), stored(2, "same"), stored(3, "same")])
    assert (plan.add, len(plan.delete), plan.kept) == ([], 1, 2)


def test_plan_replaces_passages_whose_tags_differ():
    plan = plan_file(["one"], TAGS, [stored(1, "one", ["file:a.md"])])
    assert (plan.add, plan.delete, plan.kept) == (["one"], [1], 0)


def test_plan_of_a_first_load_adds_everything():
    assert plan_file(["a", "b"], TAGS, []).add == ["a", "b"]


def test_the_overlap_limit_is_a_quarter_of_the_chunk():
    assert [max_overlap(n) for n in (1, 3, 4, 400, 1500)] == [0, 0, 1, 100, 375]


def test_document_names():
    assert document_names(["x/a.md", "b.txt"], None) == ["a.md", "b.txt"]
    assert document_names(["x/a.md"], "handbook") == ["handbook"]
    for files, name, words in ((["x/a.md", "y/a.md"], None, "two files are named a.md"),
                               (["a.md", "b.md"], "n", "one file"),
                               (["a,b.md"], None, "--name"),
                               (["a.md"], " padded", "no surrounding spaces")):
        with pytest.raises(CliError) as error:
            document_names(files, name)
        assert error.value.code == 2 and words in error.value.message


def test_scores_as_a_share_of_the_best():
    assert relative_scores([1.12e-06, 5.6e-07, 0.0]) == ["100%", "50%", "0%"]
    assert relative_scores([7.5, 2.5, None]) == ["100%", "33%", ""]
    assert relative_scores([]) == []
    # nothing positive to compare with: three decimals, never an exponent
    assert relative_scores([0.0, -1.25]) == ["0.000", "-1.250"]
