"""Fact extraction, the pure part: the request that asks the summarizer model for the facts a
user stated, and reading its answer (docs/memory.md, `[memory] extract_facts`).

A model served without tools cannot call `core_memory_append`, so nothing it hears reaches its
core memory. With extraction on, after each of its turns the summarizer model reads the user's
message and names the lasting facts in it, one short line each; new ones are appended to the
`human` block (turn/extract.py). Everything said stays in recall memory either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import Message

NONE = "NONE"
MAX_FACTS = 5
MAX_FACT_CHARS = 200

EXTRACTION_PROMPT = f"""\
You maintain a short profile of a user. Read the user's message and list the lasting facts the \
user states about themselves (name, preferences, circumstances, plans, how they want to be \
addressed). One fact per line, short, in the third person or as "Key: value", no bullets, no \
commentary. Leave out facts the profile already has, questions, and anything temporary. If there \
is nothing to add, answer exactly {NONE}."""


def extraction_request(user_text: str, profile: str) -> list[Message]:
    """The messages for the summarizer model."""
    return [
        {"role": "system", "content": EXTRACTION_PROMPT},
        {"role": "user", "content": f"Profile so far:\n{profile or '(empty)'}\n\n"
                                    f"User's message:\n{user_text}"},
    ]


def _key(text: str) -> str:
    return " ".join(text.split()).lower().rstrip(".")


def parse_facts(answer: str, profile: str) -> list[str]:
    """The new facts of the model's answer: one per line, bullets stripped, at most
    `MAX_FACTS` of at most `MAX_FACT_CHARS`, none already in `profile` (ignoring case)."""
    known = {_key(line) for line in profile.splitlines()}
    facts: list[str] = []
    for raw in answer.splitlines():
        line = raw.strip().lstrip("-*•").strip()
        if not line or line.upper().strip(".") == NONE or len(line) > MAX_FACT_CHARS:
            continue
        if _key(line) in known:
            continue
        known.add(_key(line))
        facts.append(line)
    return facts[:MAX_FACTS]


def appended(value: str, facts: Sequence[str], limit: int) -> str:
    """`value` with the facts that fit within `limit` characters appended, one per line."""
    for fact in facts:
        candidate = f"{value}\n{fact}" if value else fact
        if len(candidate) <= limit:
            value = candidate
    return value
