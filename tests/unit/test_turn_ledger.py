"""The token ledger of one prompt (`proxy.turn.ledger.TokenLedger`): its parts add up to what a
turn budgets with, and its three mutators keep every sum in step with a recount."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.prompts import BASE_INSTRUCTIONS, MemoryStats, render_summary, render_system
from proxy.core.tools import MEMORY_TOOLS
from proxy.core.types import Block, StoredMessage
from proxy.turn.ledger import PRESSURE_FRAMING, PRESSURE_NOTE, TokenLedger
from tests.fakes.turns import MODEL

factors = st.floats(min_value=0.5, max_value=3.0, allow_nan=False)
message_counts = st.lists(st.integers(min_value=1, max_value=2000), max_size=30)
texts = st.text(max_size=200)


def context_of(counts: list[int]) -> list[StoredMessage]:
    """Messages whose stored token counts are `counts` (the ledger uses them as they are)."""
    return [StoredMessage(seq=i + 1, data={"role": "user", "content": "x"}, turn_id="t",
                          created_at=0.0, tokens=n) for i, n in enumerate(counts)]


def ledger_of(counts: list[int], factor: float = 1.0, *, summary: str | None = None,
              blocks: list[Block] | None = None, client_system: str = "") -> TokenLedger:
    system = render_system(base_instructions=BASE_INSTRUCTIONS, client_system=client_system,
                           blocks=blocks or [], stats=MemoryStats(3, 1, None), now=0.0)
    return TokenLedger.count(model=MODEL, factor=factor, system_text=system, summary=summary,
                             tools=MEMORY_TOOLS, context=context_of(counts))


def recount(ledger: TokenLedger) -> int:
    return sum(math.ceil(n * ledger.factor) for n in ledger.messages)


@settings(max_examples=150, deadline=None)
@given(message_counts, factors, st.lists(texts, max_size=3), st.none() | texts, texts,
       st.booleans(), st.integers(min_value=0, max_value=4096))
def test_the_parts_add_up_to_the_budget(
    counts: list[int], factor: float, values: list[str], summary: str | None,
    client_system: str, pressure: bool, reserve: int,
) -> None:
    blocks = [Block(f"block{i}", value) for i, value in enumerate(values)]
    ledger = ledger_of(counts, factor, summary=summary, blocks=blocks,
                       client_system=client_system)
    ledger.set_pressure(pressure)
    parts = ledger.parts(blocks=blocks, reserve_output=reserve)
    assert all(value >= 0 for value in parts.values())
    assert sum(parts.values()) == ledger.fixed() + ledger.messages_total() + reserve
    assert parts["messages"] == recount(ledger)


@settings(max_examples=150, deadline=None)
@given(message_counts, factors, st.lists(st.integers(min_value=0, max_value=5), max_size=6),
       st.booleans())
def test_dropping_the_oldest_keeps_the_total_equal_to_a_recount(
    counts: list[int], factor: float, drops: list[int], scaled_first: bool,
) -> None:
    ledger = ledger_of(counts, factor)
    if scaled_first:  # the calibrated counts are cached from here on
        ledger.messages_total()
    dropped = 0
    for count in drops:
        ledger.drop_oldest(count)
        dropped += count
        assert ledger.messages == counts[dropped:]
        assert ledger.messages_total() == recount(ledger)
        assert ledger.scaled_messages() == [math.ceil(n * factor) for n in counts[dropped:]]


@settings(max_examples=100, deadline=None)
@given(factors, texts.filter(str.strip))
def test_the_summary_changes_the_fixed_part_by_its_count(factor: float, summary: str) -> None:
    ledger = ledger_of([10, 20], factor)
    without = ledger.fixed_local()
    ledger.set_summary(summary)
    assert ledger.fixed_local() - without == tokens.count_message(render_summary(summary), MODEL)
    assert ledger.fixed() == math.ceil(ledger.fixed_local() * factor)
    ledger.set_summary(None)
    assert ledger.fixed_local() == without
    ledger.set_summary("")  # an empty summary is not rendered
    assert ledger.fixed_local() == without


@given(factors)
def test_the_pressure_note_changes_the_fixed_part_by_its_template(factor: float) -> None:
    ledger = ledger_of([5], factor, summary="earlier")
    without = ledger.fixed_local()
    ledger.set_pressure(True)
    note = tokens.count_text(PRESSURE_NOTE, MODEL) + PRESSURE_FRAMING
    assert ledger.fixed_local() - without == note
    assert ledger.fixed() == math.ceil(ledger.fixed_local() * factor)
    ledger.set_pressure(True)  # idempotent
    assert ledger.fixed_local() - without == note
    ledger.set_pressure(False)
    assert ledger.fixed_local() == without


def test_the_local_total_is_what_calibration_compares_with_the_upstream() -> None:
    ledger = ledger_of([7, 11], 2.0)
    extra = [{"role": "assistant", "content": "a memory step"}]
    assert ledger.local_total() == ledger.fixed_local() + 18
    assert ledger.local_total(extra) == ledger.local_total() + tokens.count_message(
        extra[0], MODEL)
