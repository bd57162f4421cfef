"""What `memproxy ab` prints: prices, per-turn numbers and the side-by-side layout (pure).

Prices are USD per million tokens. The built-in table holds approximate public list prices of a
few well-known models, for a rough comparison only; `--price-in/--price-out` give exact ones.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

# model name → (input, output) USD per 1M tokens; matched on the name without a `vendor/`
# prefix, longest known prefix first (so dated snapshots match their family).
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
}


def price_for(model: str, price_in: float | None = None, price_out: float | None = None
              ) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: the flags when given, else the table, else None."""
    if price_in is not None or price_out is not None:
        return (price_in or 0.0, price_out or 0.0)
    name = model.rsplit("/", 1)[-1].lower()
    for known in sorted(PRICES, key=len, reverse=True):
        if name.startswith(known):
            return PRICES[known]
    return None


@dataclass
class Turn:
    """One request of one run: what was asked, what came back, what it cost."""

    session: int
    index: int
    user: str
    answer: str = ""
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def cost(self, price: tuple[float, float] | None) -> float | None:
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6


@dataclass
class Run:
    """Every turn of one arm (with memory, or raw), in script order."""

    name: str
    turns: list[Turn] = field(default_factory=list)

    def totals(self, price: tuple[float, float] | None) -> dict[str, float | int | None]:
        costs = [t.cost(price) for t in self.turns]
        return {
            "prompt_tokens": sum(t.prompt_tokens for t in self.turns),
            "completion_tokens": sum(t.completion_tokens for t in self.turns),
            "latency_s": sum(t.latency_s for t in self.turns),
            "cost_usd": None if price is None else sum(c or 0.0 for c in costs),
            "errors": sum(1 for t in self.turns if t.error),
        }


def money(value: float | None) -> str:
    if value is None:
        return "cost n/a"
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def turn_numbers(turn: Turn, price: tuple[float, float] | None) -> str:
    return (f"{turn.prompt_tokens:,} prompt tok · {turn.latency_s:.2f} s · "
            f"{money(turn.cost(price))}")


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width) or [""]
    return lines


def side_by_side(left: str, right: str, width: int) -> list[str]:
    """Two texts in columns of `width` characters, separated by ` │ `."""
    a, b = _wrap(left, width), _wrap(right, width)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return [f"{x.ljust(width)} │ {y}".rstrip() for x, y in zip(a, b, strict=True)]


def render(title: str, model: str, agent_id: str, memory: Run, raw: Run,
           price: tuple[float, float] | None, total_width: int = 100) -> str:
    """The report: a header, each turn's question and both answers in columns, the totals."""
    width = max((total_width - 3) // 2, 20)
    out = [f"A/B: {title}", f"model {model} · memory agent {agent_id}", ""]
    out += side_by_side("WITH MEMORY", "RAW (no memory)", width)
    out.append("─" * width + "─┼─" + "─" * width)
    for mem, bare in zip(memory.turns, raw.turns, strict=True):
        out.append(f"[session {mem.session} · turn {mem.index}] user: {mem.user}")
        left = f"ERROR: {mem.error}" if mem.error else mem.answer
        right = f"ERROR: {bare.error}" if bare.error else bare.answer
        out += side_by_side(left, right, width)
        out += side_by_side(turn_numbers(mem, price), turn_numbers(bare, price), width)
        out.append("")
    for run in (memory, raw):
        t = run.totals(price)
        errors = f", {t['errors']} errors" if t["errors"] else ""
        out.append(f"totals {run.name}: {t['prompt_tokens']:,} prompt tokens, "
                   f"{t['completion_tokens']:,} completion tokens, {t['latency_s']:.2f} s, "
                   f"{money(t['cost_usd'])}{errors}")
    if price is None:
        out.append(f"(no price known for {model}: pass --price-in and --price-out, USD per 1M "
                   "tokens)")
    return "\n".join(out)
