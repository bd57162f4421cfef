"""Pure parts of export/import and block history: the agent document both ways, the Letta
Agent File mapping, and the revisions the memory tools record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.core.messages import visible_hash
from proxy.core.tools import MemoryState, core_memory_append, core_memory_replace
from proxy.core.types import Agent, Block, BlockRevision, Conversation, Passage, StoredMessage
from proxy.errors import ProxyError
from proxy.portable.document import export_document, parse_document
from proxy.portable.letta import letta_dump
from proxy.store.admin_types import AgentDump, ConversationDump, TurnRecord

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "letta_agent.af"


def test_memory_tools_record_each_edit_in_order() -> None:
    state = MemoryState.of([Block("human", "", limit=40), Block("persona", "kind")])
    core_memory_append(state, {"label": "human", "content": "Name: Ada"})
    core_memory_append(state, {"label": "human", "content": "Likes tea"})
    core_memory_replace(state, {"label": "human", "old_content": "tea",
                                "new_content": "coffee"})
    core_memory_replace(state, {"label": "persona", "old_content": "kind",
                                "new_content": "kind"})  # no change: no revision
    assert state.revisions == [
        BlockRevision("human", "", "Name: Ada", "tool:core_memory_append"),
        BlockRevision("human", "Name: Ada", "Name: Ada\nLikes tea", "tool:core_memory_append"),
        BlockRevision("human", "Name: Ada\nLikes tea", "Name: Ada\nLikes coffee",
                      "tool:core_memory_replace")]
    with pytest.raises(Exception, match="over its limit"):
        core_memory_append(state, {"label": "human", "content": "x" * 40})
    assert len(state.revisions) == 3  # a refused edit is not a change


def _dump() -> AgentDump:
    messages = [
        StoredMessage(1, {"role": "user", "content": "hi ✓"}, "t1", 10.5, False, True, False, 3,
                      "vh-1"),
        StoredMessage(2, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "core_memory_append",
                                                         "arguments": "{}"}}]},
                      "t1", 11.0, True, False, False, 9, None),
        StoredMessage(3, {"role": "assistant", "content": "yo", "refusal": None}, "t1", 11.0,
                      True, True, True, None, "vh-3"),
    ]
    return AgentDump(
        Agent(7, "tenant", "alice", 1.25, {"resends_history": True}),
        [Block("human", "Name: Ada", "who", 100, True, 9.0)],
        [BlockRevision("human", "", "Name: Ada", "api", None, 8.0, 3)],
        [ConversationDump(Conversation(4, 7, "default", 2.0, "sum", False), "head",
                          messages, [TurnRecord("t1", "done", "h", "idem", 10.0, 11.0,
                                                {"id": "r"}, 1)])],
        [Passage(5, "fact", ["a"], 12.0)])


def test_document_round_trip_is_exact() -> None:
    dump = _dump()
    document = json.loads(json.dumps(export_document(dump, 99.0)))  # as sent over HTTP
    assert document["format"] == "memproxy.agent" and document["version"] == 1
    assert document["block_history"][0]["id"] == 3
    agent_id, parsed = parse_document(document, 100.0)
    assert agent_id == "alice"
    assert parsed.blocks == dump.blocks
    assert parsed.conversations[0].messages == [
        StoredMessage(m.seq, m.data, m.turn_id, m.created_at, m.in_context, m.visible,
                      m.superseded, m.tokens, m.visible_hash) for m in dump.conversations[0].messages]
    assert parsed.conversations[0].turns == dump.conversations[0].turns
    assert parsed.conversations[0].head_hash == "head"
    conv = parsed.conversations[0].conversation
    assert (conv.conversation_id, conv.created_at, conv.summary, conv.resends_history) == (
        "default", 2.0, "sum", False)
    assert [(r.label, r.new_value, r.source, r.created_at) for r in parsed.revisions] == [
        ("human", "Name: Ada", "api", 8.0)]
    assert [(p.text, p.tags, p.created_at) for p in parsed.passages] == [("fact", ["a"], 12.0)]
    assert (parsed.agent.created_at, parsed.agent.settings) == (1.25, {"resends_history": True})
    again = export_document(parsed, 99.0)
    assert again["conversations"] == document["conversations"]


def test_a_hand_written_document_gets_hashes_and_turns() -> None:
    _, parsed = parse_document({
        "format": "memproxy.agent", "version": 1, "exported_at": 0,
        "agent": {"id": "x", "created_at": 0},
        "conversations": [{"id": "c", "created_at": 0, "messages": [
            {"seq": 1, "message": {"role": "user", "content": "a"}, "turn_id": "u1",
             "created_at": 5},
            {"seq": 2, "message": {"role": "assistant", "content": "b"}, "turn_id": "u1",
             "created_at": 6, "visible": True},
            {"seq": 3, "message": {"role": "tool", "tool_call_id": "q", "content": "z"},
             "turn_id": "u2", "created_at": 7, "visible": False}]}]}, 0.0)
    messages = parsed.conversations[0].messages
    assert messages[0].visible_hash == visible_hash({"role": "user", "content": "a"})
    assert messages[2].visible_hash is None  # internal: never compared with a client's
    assert [(t.turn_id, t.status, t.first_seq, t.created_at, t.finished_at)
            for t in parsed.conversations[0].turns] == [("u1", "done", 1, 5, 6),
                                                        ("u2", "done", 3, 7, 7)]


def test_letta_file_mapping() -> None:
    name, dump = letta_dump(json.loads(FIXTURE.read_text()), now=1.0)
    assert name == "sam"
    [conv] = dump.conversations
    rows = [(m.seq, m.data["role"], m.visible, m.in_context) for m in conv.messages]
    assert rows == [(1, "user", True, False), (2, "assistant", False, False),
                    (3, "tool", False, False), (4, "assistant", True, True),
                    (5, "user", True, True), (6, "assistant", True, True)]
    # the reply written alongside memory calls comes after their results (valid pairing)
    assert conv.messages[1].data["tool_calls"][0]["id"] == conv.messages[2].data[
        "tool_call_id"]
    assert conv.messages[2].data["content"].startswith('{"status": "OK"')
    assert [t.first_seq for t in conv.turns] == [1, 5]
    assert len({m.turn_id for m in conv.messages}) == 2
    assert all(m.visible_hash == visible_hash(m.data) for m in conv.messages if m.visible)
    assert [p.created_at for p in dump.passages] == [1740042000.0, 1.0]


@pytest.mark.parametrize(("body", "param"), [
    ({"agents": [], "blocks": []}, "agents"),
    ({"agents": [{"block_ids": ["b"]}], "blocks": [{"id": "b", "label": "x y", "value": ""}]},
     "blocks[0].label"),
    ({"agents": [{"passages": "text"}]}, "passages"),
    ({"agents": [{"passages": [{"tags": []}]}]}, "passages[0]"),
])
def test_letta_problems_name_the_field(body, param) -> None:
    with pytest.raises(ProxyError) as err:
        letta_dump(body, now=1.0)
    assert (err.value.status, err.value.param) == (400, param)
