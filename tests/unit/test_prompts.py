"""System prompt rendering."""

from __future__ import annotations

from proxy.core.prompts import MemoryStats, render_system
from proxy.core.types import Block


def test_layout_keeps_stable_parts_first_and_client_text_verbatim():
    text = render_system(
        base_instructions="BASE",
        client_system="You are a pirate.\n  Keep it short.",
        blocks=[Block("persona", "I am helpful", "who you are", 5000),
                Block("human", "Name: Ada", "the user", 5000, read_only=True)],
        stats=MemoryStats(recall_messages=12, archival_passages=3, last_modified=0.0),
        now=86400 * 365,
    )
    assert text.index("BASE") < text.index("You are a pirate.\n  Keep it short.")
    assert text.index("Keep it short.") < text.index("<memory_blocks>")
    assert text.index("</memory_blocks>") < text.index("<memory_metadata>")
    assert "<persona>" in text and "<value>\nI am helpful\n</value>" in text
    assert "chars_current=9" in text and "chars_limit=5000" in text
    assert "read_only=true" in text
    assert "12 previous messages" in text and "3 total memories" in text
    assert "1971-01-01" in text


def test_rendering_is_deterministic_for_prompt_caching():
    kwargs = dict(base_instructions="B", client_system="", blocks=[Block("human", "x")],
                  stats=MemoryStats(1, 0, None), now=1000.0)
    assert render_system(**kwargs) == render_system(**kwargs)


def test_system_parts_split_off_only_what_changes_every_turn():
    from proxy import tokens
    from proxy.core.prompts import BASE_INSTRUCTIONS, system_parts

    blocks = [Block("persona", "I am helpful.\n\n<memory_metadata> in a block", "who", 5000),
              Block("human", "Name: Ada", "the user", 5000)]
    texts = [render_system(base_instructions=BASE_INSTRUCTIONS, client_system=client,
                           blocks=blocks, stats=MemoryStats(n, n // 3, 1000.0 * n),
                           now=86400.0 * n)
             for n in (1, 2, 500) for client in ("", "Be brief.\n\nAlways.")]
    for text in texts:
        stable, volatile = system_parts(text)
        assert stable + volatile == text
        assert volatile.startswith("\n\n<memory_metadata>") and "memory_blocks" not in volatile
        whole = tokens.count_text(text, "gpt-4o")
        parts = tokens.count_text(stable, "gpt-4o") + tokens.count_text(volatile, "gpt-4o")
        assert abs(parts - whole) <= 1  # a pre-token may span the cut: an estimate anyway
    assert len({system_parts(t)[0] for t in texts[0::2]}) == 1  # the same across turns
    assert system_parts("no metadata at all") == ("no metadata at all", "")
