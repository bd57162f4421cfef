"""Context paging policy (proxy.core.paging): examples and properties over random conversations."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.core.paging import (
    Budget,
    Item,
    cut_points,
    fits_alone,
    item_for,
    plan,
    protected_index,
    total,
)


def conv(*spec: tuple[str, int]) -> list[Item]:
    """Items from (role, tokens); role "call" is an assistant message with tool calls."""
    return [
        Item(
            seq=i + 1, role="assistant" if r == "call" else r, tokens=t, has_tool_calls=r == "call"
        )
        for i, (r, t) in enumerate(spec)
    ]


def kept(items: list[Item], p) -> list[Item]:
    return items[p.evicted :]


BUDGET = Budget(window=1000, reserve_output=100, fixed=100)  # 200 tokens are not evictable


def test_under_threshold_evicts_nothing():
    items = conv(("user", 100), ("assistant", 100), ("user", 100), ("assistant", 100))
    p = plan(BUDGET, items)
    assert p.reason == "under_threshold"
    assert (p.evicted, p.evict_through_seq) == (0, None)
    assert p.tokens_before == p.tokens_after == 600 == total(BUDGET, items)
    assert p.fits and not p.warn


def test_exactly_at_compact_at_is_still_under_threshold():
    items = conv(("user", 350), ("assistant", 350))  # 900 == 0.9 * 1000
    assert plan(BUDGET, items).reason == "under_threshold"


def test_compacts_to_compact_to_at_a_user_boundary():
    items = conv(*[("user", 100), ("assistant", 100)] * 4)  # total 1000
    p = plan(BUDGET, items)
    assert p.reason == "compacted"
    # to reach 600, 400 tokens must go: two full turns
    assert (p.evicted, p.evict_through_seq, p.tokens_after) == (4, 4, 600)
    assert p.fits and not p.warn


def test_never_cuts_before_a_tool_result():
    items = conv(
        ("user", 10),
        ("call", 350),
        ("tool", 350),
        ("assistant", 10),
        ("user", 10),
        ("assistant", 10),
        ("user", 10),
        ("assistant", 10),
    )  # total 750 + 200 = 950; 350 must go
    p = plan(BUDGET, items)
    # evicting through the call (seq 2) would reach the target but keep an orphan result
    assert 2 not in cut_points(items)
    assert p.evicted == 4 and kept(items, p)[0].role == "user"


def test_prefers_a_user_boundary_over_a_smaller_cut():
    items = conv(
        ("user", 300),
        ("assistant", 200),
        ("assistant", 50),
        ("user", 50),
        ("assistant", 200),
    )  # total 800 + 200 = 1000; 400 must go: the cut before seq 3 would do
    p = plan(BUDGET, items)
    assert p.evicted == 3  # the next user boundary, not the assistant at index 2
    assert kept(items, p)[0].role == "user"


def test_falls_back_to_a_non_tool_cut_inside_one_huge_turn():
    items = conv(
        ("user", 10),
        ("call", 300),
        ("tool", 400),
        ("call", 50),
        ("tool", 300),
        ("assistant", 50),
    )  # one turn; total 1110 + 200 = 1310: 710 must go
    p = plan(BUDGET, items)
    assert p.reason == "compacted"
    assert p.evicted == 3 and kept(items, p)[0].has_tool_calls  # smallest non-tool cut
    assert p.tokens_after == 600


def test_protected_items_are_never_evicted():
    items = conv(("user", 100), ("assistant", 100), ("user", 500), ("assistant", 100))
    p = plan(BUDGET, items, protect_from_seq=3)  # total 1000, target 600, only 200 evictable
    assert p.evicted == 2 and p.evict_through_seq == 2
    assert p.tokens_after == 800 and p.fits and p.reason == "compacted" and p.warn


def test_protected_tool_result_keeps_its_call():
    # the running turn's input is a client tool result answering the previous turn's call
    items = conv(("user", 100), ("assistant", 100), ("user", 100), ("call", 100), ("tool", 500))
    p = plan(BUDGET, items, protect_from_seq=5)
    # 500 must go but only 300 can: the cut stops at the call, not between call and result
    assert protected_index(items, 5) == 4
    assert p.evicted == 3 and kept(items, p)[0].has_tool_calls and p.fits


def test_cannot_fit():
    items = conv(("user", 100), ("assistant", 100), ("user", 900))
    p = plan(BUDGET, items, protect_from_seq=3)
    assert p.reason == "cannot_fit" and not p.fits
    assert p.evicted == 2 and p.tokens_after == 1100
    assert not fits_alone(BUDGET, 900) and fits_alone(BUDGET, 800)


def test_everything_may_go_without_protection():
    items = conv(("user", 500), ("assistant", 500))
    p = plan(BUDGET, items)
    assert p.evicted == 2 and p.evict_through_seq == 2 and p.tokens_after == 200


def test_force_to_shrinks_further_even_under_threshold():
    items = conv(*[("user", 100), ("assistant", 100)] * 3)  # 800: under compact_at
    assert plan(BUDGET, items).evicted == 0
    p = plan(BUDGET, items, force_to=0.4)
    assert p.reason == "forced" and p.evicted == 4 and p.tokens_after == 400
    q = plan(BUDGET, items, force_to=0.9)  # already under the forced target
    assert q.reason == "forced" and q.evicted == 0


def test_warn_flag_after_the_plan():
    budget = Budget(window=1000, reserve_output=100, fixed=100, compact_to=0.8)
    items = conv(*[("user", 100), ("assistant", 100)] * 4)
    p = plan(budget, items)
    assert p.tokens_after == 800 and p.warn  # 800 >= 750
    assert not plan(BUDGET, items).warn  # 600 < 750


def test_item_for_reads_roles_and_tool_calls():
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {}}]}
    assert item_for(7, call, 12) == Item(7, "assistant", 12, True)
    assert item_for(8, {"role": "function", "content": "x"}, 3).role == "tool"


def test_linear_on_long_conversations():
    items = conv(*[("user", 10), ("call", 10), ("tool", 10), ("assistant", 10)] * 25_000)
    budget = Budget(window=1_000_000, reserve_output=0, fixed=0)
    p = plan(budget, items, protect_from_seq=items[-4].seq)
    assert p.tokens_after <= 600_000 and kept(items, p)[0].role == "user"


# --------------------------------------------------------------------------- properties

sizes = st.one_of(st.just(0), st.integers(0, 60), st.integers(0, 2_000), st.integers(10**4, 10**5))


@st.composite
def conversations(draw) -> list[Item]:
    spec: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["user", "user", "assistant", "system", "tools"]))
        if kind == "tools":
            spec.append(("call", draw(sizes)))
            spec.extend(("tool", draw(sizes)) for _ in range(draw(st.integers(1, 3))))
        else:
            spec.append((kind, draw(sizes)))
    return conv(*spec)


@st.composite
def cases(draw):
    items = draw(conversations())
    fixed, reserve = draw(st.integers(0, 20_000)), draw(st.integers(0, 5_000))
    need = fixed + reserve + sum(item.tokens for item in items)
    # mostly windows near what the conversation needs, so every branch is exercised
    window = draw(
        st.one_of(
            st.integers(1, 300_000),
            st.floats(0.3, 2.5).map(lambda f: max(1, int(need * f))),
        )
    )
    compact_to = draw(st.floats(0.05, 1.0))
    budget = Budget(
        window=window,
        reserve_output=reserve,
        fixed=fixed,
        warn_at=draw(st.floats(0.05, 1.0)),
        compact_at=draw(st.floats(compact_to, 1.0)),
        compact_to=compact_to,
    )
    protect = draw(st.one_of(st.none(), st.integers(0, len(items) + 1)))
    force = draw(st.one_of(st.none(), st.none(), st.floats(0.0, 1.0)))
    return budget, items, protect, force


def check(budget: Budget, items: list[Item], protect: int | None, force: float | None) -> None:
    p = plan(budget, items, protect_from_seq=protect, force_to=force)
    k = p.evicted
    rest = items[k:]
    # consistency
    assert p.evict_through_seq == (items[k - 1].seq if k else None)
    assert p.tokens_before == total(budget, items)
    assert p.tokens_after == total(budget, rest)
    assert p.warn == (p.tokens_after >= budget.warn_at * budget.window)
    # (1) kept items never start with a tool result; every kept result has its call
    if rest:
        assert rest[0].role != "tool"
    for i, item in enumerate(rest):
        if item.role == "tool":
            j = i - 1
            while rest[j].role == "tool":
                j -= 1
            assert j >= 0 and rest[j].has_tool_calls
    # (2) fits means within the window, and cannot_fit is exactly the opposite
    assert p.fits == (p.tokens_after <= budget.window)
    assert (p.reason == "cannot_fit") == (not p.fits and p.reason != "under_threshold")
    # (4) protected items are never evicted
    if protect is not None:
        assert all(item.seq < protect for item in items[:k])
    # (5) under threshold: nothing evicted
    if force is None and p.tokens_before <= budget.compact_at * budget.window:
        assert p.reason == "under_threshold" and k == 0
        return
    # (3) minimal: no smaller cut of the chosen kind reaches the target; if the target is not
    # reached, nothing more could be evicted
    target = (budget.compact_to if force is None else force) * budget.window
    allowed = cut_points(items, protect_from_seq=protect)
    reaches = [c for c in allowed if total(budget, items[c:]) <= target]
    user_cuts = [c for c in reaches if c == 0 or (c < len(items) and items[c].role == "user")]
    if p.tokens_after <= target:
        assert k == (user_cuts[0] if user_cuts else reaches[0])
    else:
        assert not reaches and k == allowed[-1]


@settings(max_examples=400, deadline=None)
@given(cases())
def test_plan_properties(case):
    check(*case)


@settings(max_examples=200, deadline=None)
@given(conversations(), st.integers(1, 10**5))
def test_plan_near_the_threshold(items, slack):
    """Budgets placed just around compact_at exercise the threshold itself."""
    assume(items)
    used = sum(i.tokens for i in items)
    budget = Budget(window=max(1, used + slack), reserve_output=0, fixed=slack // 2)
    check(budget, items, items[-1].seq, None)
    check(budget, items, None, None)
