"""The conversation tree's pure parts (core/tree.py): path hashes and building the tree of
rows stored as a line by an older release."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.tree import ROOT_HASH, Node, TreeRow, chain, hang, path_hash, prefer, rebuild
from proxy.core.types import NewMessage


def row(seq: int, turn: str, role: str = "user", *, superseded: bool = False,
        visible: bool = True, parent: int | None = None) -> TreeRow:
    return TreeRow(seq, turn, role, visible, superseded, f"h{seq}", parent)


def parents(rows: list[TreeRow]) -> dict[int, int]:
    return {seq: parent for seq, parent, _ in rebuild(rows)}


def test_a_path_hash_names_the_whole_path_not_just_the_message():
    assert chain(["x", "y"])[-1] != chain(["z", "y"])[-1]
    assert chain(["x", "y"]) == [path_hash(ROOT_HASH, "x"), path_hash(path_hash(ROOT_HASH, "x"), "y")]
    assert chain([]) == []


def test_hang_chains_visible_messages_and_steps_inherit_their_parents_path():
    step = NewMessage({"role": "assistant", "content": None, "tool_calls": []}, visible=False)
    reply = NewMessage({"role": "assistant", "content": "ok"}, visible=True)
    last = hang([step, reply], "start")
    assert step.path_hash == "start"
    assert reply.path_hash == last == path_hash("start", reply.visible_hash)


def test_prefer_takes_the_active_node_then_the_newest():
    old, new, active = Node(1, "p", "user", False), Node(5, "p", "user", False), Node(3, "p", "user", True)
    assert prefer([old, new]) == new
    assert prefer([old, active, new]) == active
    assert prefer([]) is None


def test_a_line_without_superseded_rows_is_one_path():
    rows = [row(1, "t1"), row(2, "t1", "assistant"), row(3, "t2"), row(4, "t2", "assistant")]
    built = rebuild(rows)
    assert [p for _, p, _ in built] == [0, 1, 2, 3]
    assert [h for _, _, h in built] == chain(["h1", "h2", "h3", "h4"])


def test_an_edit_keeps_the_old_messages_as_a_branch_under_the_same_parent():
    # u1 a1 | u2 a2 superseded by the edit u2' a2'
    rows = [row(1, "t1"), row(2, "t1", "assistant"),
            row(3, "t2", superseded=True), row(4, "t2", "assistant", superseded=True),
            row(5, "t3"), row(6, "t3", "assistant")]
    assert parents(rows) == {1: 0, 2: 1, 3: 2, 4: 3, 5: 2, 6: 5}


def test_replies_regenerated_twice_are_siblings():
    rows = [row(1, "t1"), row(2, "t1", "assistant", superseded=True),
            row(3, "t2", "assistant", superseded=True), row(4, "t3", "assistant")]
    assert parents(rows) == {1: 0, 2: 1, 3: 1, 4: 1}


def test_internal_steps_hang_between_the_messages_they_belong_to():
    rows = [row(1, "t1"), row(2, "t1", "assistant", visible=False),
            row(3, "t1", "tool", visible=False), row(4, "t1", "assistant")]
    built = rebuild(rows)
    assert [p for _, p, _ in built] == [0, 1, 2, 3]
    hashes = [h for _, _, h in built]
    assert hashes[1] == hashes[2] == hashes[0]  # steps do not change the path
    assert hashes[3] == chain(["h1", "h4"])[-1]


def test_recorded_parents_are_kept_and_impossible_ones_inferred():
    rows = [row(1, "t1"), row(2, "t1", "assistant"), row(3, "t2", parent=1),
            row(4, "t3", parent=9)]
    assert parents(rows) == {1: 0, 2: 1, 3: 1, 4: 3}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from(["user", "assistant"])),
                max_size=20))
def test_the_active_path_is_always_the_rows_not_superseded(flags):
    rows = [row(i + 1, f"t{i // 2}", role, superseded=sup, visible=vis)
            for i, (sup, vis, role) in enumerate(flags)]
    built = {seq: (parent, h) for seq, parent, h in rebuild(rows)}
    active = [r for r in rows if not r.superseded]
    for before, after in zip([None, *active], active, strict=False):
        assert built[after.seq][0] == (0 if before is None else before.seq)
    for r in rows:
        assert built[r.seq][0] < r.seq  # a parent always comes first


def test_a_reply_regenerated_after_one_with_memory_steps_is_its_sibling():
    rows = [row(1, "t1"), row(2, "t1", "assistant"), row(3, "t2"),
            row(4, "t2", "assistant", superseded=True, visible=False),
            row(5, "t2", "tool", superseded=True, visible=False),
            row(6, "t2", "assistant", superseded=True),
            row(7, "t3", "assistant", superseded=True), row(8, "t4", "assistant")]
    assert parents(rows) == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 3, 8: 3}
