"""LoCoMo conversations as plain data, and the retrieval measures (for `bench/recall.py`).

LoCoMo (Maharana et al., ACL 2024; github.com/snap-research/locomo, CC BY-NC 4.0: never
committed here, the benchmark takes a path) comes in two layouts, both read:

- the public release's `locomo10.json`: a list of `{"sample_id", "conversation": {...},
  "qa": [...], ...}`;
- one file per conversation (the `locomo10_v2` layout): `{"speaker_a", "speaker_b",
  "session_N": [...], "session_N_date_time", ..., "qa": [...]}`.

Evidence ids name turns (`D3:7` = session 3, turn 7). A few are malformed in the data
(`"D8:6; D9:17"`, `D:11:26`, `D30:05`) or name turns that do not exist: they are split,
normalised, and the ones that still match no turn are dropped (a question left without
evidence is not scored). Pure functions, no I/O beyond reading the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop",
              5: "adversarial"}
_EVIDENCE = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)")
_DATE_FORMATS = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%I:%M %p on %d %B %Y",
                 "%d %B, %Y", "%d %B %Y")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    created_at: float


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]


@dataclass
class Conversation:
    name: str
    speakers: tuple[str, str]
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def parse_date(value: str) -> float:
    """LoCoMo's session date ("1:56 pm on 8 May, 2023") as a UTC timestamp."""
    cleaned = " ".join(value.replace("\u202f", " ").split())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unrecognised session date {value!r}")


def evidence_ids(raw: Iterable[Any]) -> list[str]:
    """Every `D<session>:<turn>` found in the raw entries, leading zeros dropped."""
    out: list[str] = []
    for entry in raw:
        for session, turn in _EVIDENCE.findall(str(entry)):
            dia = f"D{int(session)}:{int(turn)}"
            if dia not in out:
                out.append(dia)
    return out


def conversation(name: str, body: dict[str, Any], qa: Sequence[dict[str, Any]]) -> Conversation:
    """One conversation from its `conversation` object (speakers, sessions, dates) and `qa`."""
    conv = Conversation(name, (str(body["speaker_a"]), str(body["speaker_b"])))
    numbers = sorted(int(m.group(1)) for key in body
                     if (m := re.fullmatch(r"session_(\d+)", key)))
    for n in numbers:
        turns = body.get(f"session_{n}") or []
        start = parse_date(str(body[f"session_{n}_date_time"]))
        for i, turn in enumerate(turns):
            # One second apart: the order within a session survives any newest-first tie-break.
            conv.turns.append(Turn(str(turn["dia_id"]).strip(), str(turn["speaker"]),
                                   str(turn.get("text") or ""), start + i))
    known = {t.dia_id for t in conv.turns}
    for item in qa:
        evidence = tuple(e for e in evidence_ids(item.get("evidence") or []) if e in known)
        conv.questions.append(Question(str(item["question"]), int(item["category"]), evidence))
    return conv


def load(path: Path) -> list[Conversation]:
    """Every conversation under `path`: a locomo10.json-style list file, a single conversation
    file, or a directory of either (`*.json`, sorted by name)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out: list[Conversation] = []
    for file in files:
        data = json.loads(file.read_text())
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "qa" not in item:
                continue
            body = item.get("conversation", item)
            name = str(item.get("sample_id") or (file.stem if len(items) == 1
                                                  else f"{file.stem}-{i}"))
            out.append(conversation(name, body, item["qa"]))
    if not out:
        raise ValueError(f"no LoCoMo conversations found in {path}")
    return out


def scores(found: Sequence[str], evidence: Sequence[str]) -> dict[str, float]:
    """recall@k and hit@k of one ranked result against the question's evidence turns."""
    wanted = set(evidence)
    out: dict[str, float] = {}
    for k in KS:
        got = len(wanted.intersection(found[:k]))
        out[f"R@{k}"] = got / len(wanted)
        out[f"hit@{k}"] = 1.0 if got else 0.0
    return out


def aggregate(rows: Sequence[tuple[int, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Means per category (`cat1`..`cat5`) and over the answerable categories 1-4 together
    (`1-4`; 5, adversarial, stays apart), each with its question count `n`."""
    buckets: dict[str, list[dict[str, float]]] = {}
    for category, row in rows:
        buckets.setdefault(f"cat{category}", []).append(row)
        if category != 5:  # "cat5" is already the adversarial group
            buckets.setdefault("1-4", []).append(row)
    out: dict[str, dict[str, float]] = {}
    for name, items in buckets.items():
        means = {key: sum(r[key] for r in items) / len(items) for key in items[0]}
        out[name] = {"n": float(len(items)), **means}
    return out
