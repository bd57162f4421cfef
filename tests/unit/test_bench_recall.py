"""bench/recall_data.py: both LoCoMo layouts, evidence normalisation, the measures; and the
agent document the benchmark imports (synthetic conversations: LoCoMo itself is not here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import recall_data as data
from bench.recall import document
from proxy.portable.document import parse_document

BODY = {
    "speaker_a": "Ann", "speaker_b": "Bo Li",
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a puppy."},
                  {"speaker": "Bo Li", "dia_id": "D1:2", "text": "What is its name?"}],
    "session_2_date_time": "10:00 am on 9 June, 2023",
    "session_2": [{"speaker": "Bo Li", "dia_id": "D2:1", "text": "I ran a marathon.",
                   "img_url": ["x"], "blip_caption": "a runner"}],
    "session_3_date_time": "9:00 am on 1 July, 2023",  # a date without turns
}
QA = [{"question": "What did Ann adopt?", "answer": "a puppy", "evidence": ["D1:1"],
       "category": 4},
      {"question": "When?", "answer": "May", "evidence": ["D1:1; D2:01", "D:1:2", "D9:9"],
       "category": 2},
      {"question": "Unanswerable", "adversarial_answer": "x", "evidence": [], "category": 5}]


def test_both_layouts_load_the_same_conversation(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "c7.json").write_text(json.dumps({**BODY, "qa": QA}))
    (tmp_path / "locomo10.json").write_text(json.dumps(
        [{"sample_id": "c7", "conversation": BODY, "qa": QA}]))
    per_file = data.load(tmp_path / "one")
    listed = data.load(tmp_path / "locomo10.json")
    assert per_file == listed and len(listed) == 1
    conv = listed[0]
    assert conv.name == "c7" and conv.speakers == ("Ann", "Bo Li")
    assert [t.dia_id for t in conv.turns] == ["D1:1", "D1:2", "D2:1"]
    assert conv.turns[1].created_at == conv.turns[0].created_at + 1
    assert conv.turns[0].created_at == data.parse_date("1:56 pm on 8 May, 2023")
    # "D1:1; D2:01" split, "D:1:2" mended, "D9:9" names no turn
    assert [q.evidence for q in conv.questions] == [("D1:1",), ("D1:1", "D2:1", "D1:2"), ()]


def test_no_conversation_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError):
        data.load(tmp_path)
    with pytest.raises(ValueError):
        data.parse_date("someday")


def test_recall_and_hit_at_k() -> None:
    found = ["a", "x", "y", "z", "b"] + [f"n{i}" for i in range(20)]
    s = data.scores(found, ("a", "b", "c"))
    assert s["R@1"] == pytest.approx(1 / 3) and s["hit@1"] == 1.0
    assert s["R@5"] == pytest.approx(2 / 3) and s["R@20"] == pytest.approx(2 / 3)
    assert data.scores(["x"], ("a",))["hit@10"] == 0.0
    agg = data.aggregate([(1, {"R@1": 1.0}), (4, {"R@1": 0.0}), (5, {"R@1": 1.0})])
    assert agg["1-4"] == {"n": 2.0, "R@1": 0.5}
    assert agg["cat5"] == {"n": 1.0, "R@1": 1.0} and "5" not in agg


def test_the_document_is_a_valid_import_with_speakers_as_names() -> None:
    conv = data.conversation("c 7", BODY, QA)
    doc = document(conv)
    agent_id, _ = parse_document(doc, 0.0)
    assert agent_id == "locomo-c-7"
    messages = doc["conversations"][0]["messages"]
    assert [m["message"]["role"] for m in messages] == ["user", "assistant", "assistant"]
    assert messages[1]["message"] == {"role": "assistant", "name": "Bo_Li",
                                      "content": "Bo Li: What is its name?"}
    assert not any(m["in_context"] for m in messages)
