"""A chat UI's side of a conversation, for property tests: the message tree the client keeps
(Open WebUI, LibreChat and ChatGPT store messages with parent ids), the texts it writes, the
side requests it sends, and a fake model whose answers can be told apart.

Why a tree: the client knows every branch it ever made and which one is shown, so the test
knows, after every request, exactly which messages the model must see (the shown branch) and
which it must never see (those that exist only on other branches).

Texts: every message carries a tag (`[u7]`, `[a12]`, `[e3]`) so that one message's text is
never a substring of another's, and a topic word so that searches hit many branches. Two
"canned" questions always get the same answer, so identical exchanges appear on several
branches (as when a user asks the same thing again after an edit).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import MEMORY_TOOLS, Reply, message_text, offered_tools

TOPICS = ("kiwi", "mango", "plum")
CANNED = ("[s1] same question about kiwi", "[s2] same question about plum")
_serial = itertools.count(1)


def user_text(topic: str, *, edited: bool = False) -> str:
    return f"[u{next(_serial)}] {'edited: ' if edited else ''}tell me about {topic}"


def search_text(topic: str) -> str:
    """A user message that makes `responder` call `conversation_search` for `topic`."""
    return f"[u{next(_serial)}] Search history: {topic}"


def edited_answer(topic: str) -> str:
    """An assistant message the user rewrote in the UI (the client sends it, no model wrote it)."""
    return f"[e{next(_serial)}] an edited answer about {topic}"


@dataclass
class Node:
    id: int
    parent: int | None
    role: str
    content: str
    steps: set[str] = field(default_factory=set)  # memory tool call ids of the turn that wrote it


class ClientTree:
    """Messages with parent ids. A message the client writes with the same role and text as an
    existing sibling is that sibling (memproxy locates messages by their path, so it may store
    it once); a reply the model gives is a node of its own even when its text repeats a
    sibling's (a regenerate that came out the same is a second reply, as in Open WebUI)."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self._ids = itertools.count(1)

    def add(self, parent: int | None, role: str, content: str, *, reply: bool = False) -> int:
        for node in self.nodes.values():
            if not reply and (node.parent, node.role, node.content) == (parent, role, content):
                return node.id
        node = Node(next(self._ids), parent, role, content)
        self.nodes[node.id] = node
        return node.id

    def path(self, node_id: int | None) -> list[Node]:
        out: list[Node] = []
        while node_id is not None:
            node = self.nodes[node_id]
            out.append(node)
            node_id = node.parent
        return out[::-1]

    def leaves(self) -> list[int]:
        parents = {n.parent for n in self.nodes.values()}
        return [i for i in self.nodes if i not in parents]

    def roots(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent is None]

    def counts(self) -> Counter[tuple[str, str]]:
        """How often each (role, text) may be stored at most: once per node."""
        return Counter((n.role, n.content) for n in self.nodes.values())

    def only_elsewhere(self, node_id: int | None) -> set[str]:
        """Texts of the tree that are not on the path to `node_id`: another branch's alone."""
        on_path = {n.content for n in self.path(node_id)}
        return {n.content for n in self.nodes.values()} - on_path


def wire(nodes: list[Node]) -> list[dict[str, str]]:
    return [{"role": n.role, "content": n.content} for n in nodes]


# --- Open WebUI's side requests (shortened from the recorded 0.12.4 traffic) -------------------

def _history(nodes: list[Node]) -> str:
    return "\n".join(f"{n.role.upper()}: {n.content}" for n in nodes)


def side_prompt(kind: str, nodes: list[Node]) -> str:
    if kind == "title":
        return ("### Task:\nGenerate a concise title summarizing the chat history.\n"
                "### Guidelines:\n- Keep it short: 2-4 words is best.\n### Output:\n"
                'JSON format: { "title": "your concise title here" }\n### Chat History:\n'
                f"<chat_history>\n{_history(nodes)}\n</chat_history>")
    if kind == "follow_ups":
        return ("### Task:\nPredict 3-5 useful messages this user might naturally send next "
                "to advance their current objective.\n### Output:\n"
                'JSON format: { "follow_ups": ["Suggested next message 1"] }\n'
                f"### Chat History:\n<chat_history>\n{_history(nodes[-4:])}\n</chat_history>")
    # The emoji prompt of call mode: carries the chat id, does not start with "### Task:".
    return ("Your task is to reflect the speaker's likely facial expression through a fitting "
            "emoji. Interpret emotions from the message and reflect their facial expression "
            "using fitting, diverse emojis (e.g., 😊, 😢, 😡, 😱).\n\n"
            f"Message: ```{nodes[-1].content}```")


SIDE_KINDS = ("title", "follow_ups", "emoji")


# --- the fake model --------------------------------------------------------------------------

def responder(body: dict[str, Any]) -> Reply:
    """A unique answer per upstream call (`[aN] ... about TOPIC`), except: a canned question
    always gets the same answer, "Search history: T" calls `conversation_search`, and a side
    request gets a side answer."""
    messages = [m for m in body.get("messages") or [] if m.get("role") not in ("system", "developer")]
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return Reply(content=f"[a{next(_serial)}] searched my memory")
    text = message_text(last)
    if text.startswith("### Task:") or text.startswith("Your task is"):
        return Reply(content='{"title": "A chat"}')
    if text in CANNED:
        return Reply(content=text.replace("] same question", "r] same answer"))
    found = re.search(r"Search history: (\w+)", text)
    if found and "conversation_search" in offered_tools(body):
        return Reply(tool_calls=[("conversation_search", {"query": found[1], "limit": 20})])
    topic = re.search(r"about (\w+)", text)
    return Reply(content=f"[a{next(_serial)}] an answer about {topic[1] if topic else 'it'}")


def split_prompt(messages: list[dict]) -> tuple[list[dict[str, str]], list[str]]:
    """A prompt's visible messages (no system, no memory-tool step) and the ids of its memory
    tool calls, in order."""
    visible: list[dict[str, str]] = []
    steps: list[str] = []
    step_ids: set[str] = set()
    for m in messages:
        if m.get("role") in ("system", "developer"):
            continue
        calls = m.get("tool_calls") or []
        if calls and all((c.get("function") or {}).get("name") in MEMORY_TOOLS for c in calls):
            ids = [c.get("id") for c in calls]
            steps += ids
            step_ids.update(ids)
            continue
        if m.get("role") == "tool" and m.get("tool_call_id") in step_ids:
            continue
        visible.append({"role": m["role"], "content": message_text(m)})
    return visible, steps
