"""Hypothesis drives a chat UI (Open WebUI's shape: the whole shown branch is resent, the chat
id in `X-OpenWebUI-Chat-Id`) through random histories against a real memproxy in front of the
scripted upstream: append, regenerate, edit at any depth (message 1 and assistant messages
included), switch to any earlier branch, drop the oldest turns, history searches, side requests,
marked retries and unmarked resends (which, from a chat UI, are regenerates); each example
streams or not.

The client side is a message tree (`tests/chat_tree.py`), as the UI keeps it, so after every
step the test knows the branch shown and the texts that exist only on other branches. Why it
matters: conversations are trees (issue #15); a line plus heuristics gave the model another
branch's messages, lost a chat to a side request and stored turns twice.

Checked after every request and every step, on SQLite and Postgres, with a window so big that
nothing is paged out:
1. every upstream prompt, minus system messages and memproxy's memory-tool steps, is exactly
   the branch the client shows up to its new message (a client that dropped its oldest turns
   gets the whole branch: memproxy keeps what the client no longer sends);
2. the stored active transcript (agents REST API) is that branch, each message once, and no
   (role, text) is stored more often than the client's tree holds it;
3. no text that exists only on another branch is in any prompt (system prompt and memory-tool
   results included), in the agent's recall listing or in default full-text search, and no
   memory-tool step of another branch is in a prompt.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.chat_tree import (
    CANNED,
    SIDE_KINDS,
    TOPICS,
    ClientTree,
    Node,
    edited_answer,
    responder,
    search_text,
    side_prompt,
    split_prompt,
    user_text,
    wire,
)

MODEL = "gpt-4o-mini"
BIG_WINDOW = {"models": {MODEL: {"context_window": 1_000_000}},
              "memory": {"default_context_window": 1_000_000}}
_chats = itertools.count(1)

topics = st.sampled_from(TOPICS)
# What the user types: a fresh question (unique text) or one of the canned questions, whose
# identical answers make identical exchanges on several branches.
says = st.sampled_from([("new", t) for t in TOPICS] + [("canned", c) for c in CANNED])
indexes = st.integers(0, 40)  # taken modulo the number of choices: shrinks to the first


def say(spec: tuple[str, str]) -> str:
    kind, value = spec
    return user_text(value) if kind == "new" else value


class ChatUi(RuleBasedStateMachine):
    """One chat of one agent per example; `proxy`, `fake` and `http` are set by the test."""

    proxy: Any
    fake: Any
    http: httpx.Client

    def __init__(self) -> None:
        super().__init__()
        n = next(_chats)
        self.agent, self.chat = f"tree-{n}", f"chat-{n}"
        self.tree = ClientTree()
        self.stream = False
        self.current: int | None = None  # the reply shown last
        self.last: tuple[list[dict], int, str] | None = None  # last stateful request, reply

    # -- the client ------------------------------------------------------------------------

    def branch(self) -> list[Node]:
        return self.tree.path(self.current)

    @initialize(stream=st.booleans())
    def client_streams(self, stream: bool) -> None:
        """Open WebUI streams its chat requests; some clients do not. Side requests too."""
        self.stream = stream

    def post(self, messages: list[dict], extra: dict[str, str] | None = None) -> str:
        """Send a chat request as the client does; the answer's text (streamed or not)."""
        headers = {"X-Agent-Id": self.agent, "X-OpenWebUI-Chat-Id": self.chat, **(extra or {})}
        body = {"model": MODEL, "messages": messages, "stream": self.stream}
        response = self.http.post("/v1/chat/completions", headers=headers, json=body)
        assert response.status_code == 200, response.text
        if not self.stream:
            return response.json()["choices"][0]["message"]["content"]
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", f"stream not finished: {response.text[-300:]}"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not [c for c in chunks if "error" in c], f"stream error: {response.text[-300:]}"
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.get("choices"))

    def turn(self, messages: list[dict], asked: int) -> None:
        """Send a stateful request ending with the tree's user message `asked`, check every
        prompt it sent upstream, and show the reply (a new child of `asked`)."""
        path = self.tree.path(asked)
        expected = wire(path)
        assert expected[len(expected) - len(messages):] == messages, "test model inconsistent"
        before = len(self.fake.requests)
        reply = self.post(messages)
        calls = self.fake.requests[before:]
        assert calls, "a new turn must reach the model"
        allowed = set().union(*(n.steps for n in path))
        elsewhere = self.tree.only_elsewhere(asked)
        new_steps: set[str] = set()
        for i, call in enumerate(calls):
            visible, steps = split_prompt(call.json["messages"])
            assert visible == expected, (
                f"prompt {i + 1} of this turn is not the client's branch:\n"
                f"sent to the model: {visible}\nclient's branch:   {expected}")
            assert len(steps) == len(set(steps)), f"a memory step twice in a prompt: {steps}"
            foreign = set(steps) - allowed
            if i == 0:
                assert not foreign, f"memory steps of another branch in the prompt: {foreign}"
            new_steps |= foreign
            self.assert_no_leak(call.json["messages"], elsewhere, f"prompt {i + 1}")
        node = self.tree.add(asked, "assistant", reply, reply=True)
        self.tree.nodes[node].steps |= new_steps
        self.current = node
        self.last = (messages, asked, reply)

    def ask(self, parent: int | None, text: str) -> None:
        asked = self.tree.add(parent, "user", text)
        self.turn(wire(self.tree.path(asked)), asked)

    @staticmethod
    def assert_no_leak(messages: list[dict], elsewhere: set[str], where: str) -> None:
        for m in messages:
            content = str(m.get("content") or "")
            leaked = sorted(t for t in elsewhere if t in content)
            assert not leaked, (f"{where}: a {m.get('role')} message holds text that exists "
                                f"only on another branch: {leaked}")

    # -- what the user does ----------------------------------------------------------------

    @rule(spec=says)
    def append(self, spec: tuple[str, str]) -> None:
        self.ask(self.current, say(spec))

    @rule(topic=topics)
    def search_history(self, topic: str) -> None:
        """The model calls `conversation_search`: its result must hold this branch only."""
        self.ask(self.current, search_text(topic))

    @precondition(lambda self: self.current is not None)
    @rule()
    def regenerate(self) -> None:
        asked = self.tree.nodes[self.current].parent
        self.turn(wire(self.tree.path(asked)), asked)

    @precondition(lambda self: self.current is not None)
    @rule(depth=indexes, spec=says, topic=topics)
    def edit(self, depth: int, spec: tuple[str, str], topic: str) -> None:
        """Replace message `depth` (0 = message 1) and drop what follows. An edited assistant
        message is sent by the client with the user's next message."""
        branch = self.branch()
        node = branch[depth % len(branch)]
        if node.role == "user":
            self.ask(node.parent, say(spec))
        else:
            edited = self.tree.add(node.parent, "assistant", edited_answer(topic))
            self.ask(edited, say(spec))

    @precondition(lambda self: len(self.tree.leaves()) > 1)
    @rule(pick=indexes, spec=says)
    def switch_branch(self, pick: int, spec: tuple[str, str]) -> None:
        """Show another branch (the UI's `< 1/2 >`) and send a message on it."""
        others = [leaf for leaf in self.tree.leaves() if leaf != self.current]
        self.ask(others[pick % len(others)], say(spec))

    def window_starts(self) -> list[int]:
        """Where a message window may begin: at a user message after the first, such that the
        window is unambiguous. Its first text is no first message of any branch (else it is a
        known path from the root, which rightly continues that path), and the window occurs
        once in the branch, at its end (else, with identical exchanges repeated, it could as
        well be a regenerate or an edit further up)."""
        branch = [(n.role, n.content) for n in self.branch()]
        firsts = {n.content for n in self.tree.roots()}

        def once(i: int) -> bool:
            run = branch[i:]
            return not any(branch[j:j + len(run)] == run for j in range(i))

        return [i for i, (role, text) in enumerate(branch)
                if i > 0 and role == "user" and text not in firsts and once(i)]

    @precondition(lambda self: self.current is not None and bool(self.window_starts()))
    @rule(keep=indexes, spec=says)
    def drop_oldest(self, keep: int, spec: tuple[str, str]) -> None:
        """A client with a message window sends only its last exchanges and a new message."""
        branch, starts = self.branch(), self.window_starts()
        start = starts[len(starts) - 1 - keep % len(starts)]
        asked = self.tree.add(self.current, "user", say(spec))
        self.turn([*wire(branch[start:]), {"role": "user", "content": self.tree.nodes[asked].content}],
                  asked)

    @precondition(lambda self: self.current is not None)
    @rule(kind=st.sampled_from(SIDE_KINDS))
    def side_request(self, kind: str) -> None:
        """Open WebUI's title / follow-up / emoji prompt, with the chat id: passed through,
        changes nothing (the invariants check the store)."""
        messages = [{"role": "user", "content": side_prompt(kind, self.branch())}]
        before = len(self.fake.requests)
        self.post(messages)
        calls = self.fake.requests[before:]
        assert len(calls) == 1, f"a side request made {len(calls)} upstream calls"
        visible, steps = split_prompt(calls[0].json["messages"])
        assert (visible, steps) == (messages, []), f"side request not passed through: {visible}"
        self.assert_no_leak(calls[0].json["messages"], self.tree.only_elsewhere(self.current),
                            "side request")

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry(self) -> None:
        """The SDK's retry of the last request: its stored answer, no upstream call."""
        messages, _, reply = self.last
        before = len(self.fake.requests)
        assert self.post(messages, {"x-stainless-retry-count": "1"}) == reply, \
            "a marked retry must replay the last turn's answer"
        assert len(self.fake.requests) == before, "a marked retry reached the model"

    @precondition(lambda self: self.last is not None)
    @rule()
    def resend(self) -> None:
        """The same request again without a marker: from a chat UI that is a regenerate."""
        messages, asked, _ = self.last
        self.turn(messages, asked)

    # -- what memproxy keeps ---------------------------------------------------------------

    def rest(self, path: str, **params: Any) -> list[dict]:
        response = self.http.get(f"/v1/agents/{self.agent}{path}", params=params)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    @invariant()
    def stored_transcript_is_the_branch(self) -> None:
        if self.current is None:
            return
        path = f"/conversations/{self.chat}/messages"
        rows = self.rest(path, limit=1000)
        assert [(r["role"], r["content"]) for r in rows if r["visible"]] == \
            [(n.role, n.content) for n in self.branch()], "stored transcript is not the branch"
        everything = self.rest(path, limit=1000, include_superseded="true")
        stored = Counter((r["role"], r["content"]) for r in everything if r["visible"])
        extra = stored - self.tree.counts()
        assert not extra, f"stored more often than the client's tree holds it: {dict(extra)}"
        both = [r["seq"] for r in everything if r["in_context"] and r["superseded"]]
        assert not both, f"superseded messages in context: seqs {both}"

    @invariant()
    def default_search_finds_this_branch_only(self) -> None:
        if self.current is None:
            return
        elsewhere = self.tree.only_elsewhere(self.current)
        hits = self.rest("/messages", limit=1000)  # blank query: the whole recall memory
        for topic in TOPICS:
            hits += self.rest("/messages", query=topic, limit=1000)
            hits += self.rest(f"/conversations/{self.chat}/messages", query=topic, limit=1000)
        leaked = sorted({h["content"] for h in hits} & elsewhere)
        assert not leaked, f"default search finds texts of another branch only: {leaked}"


def test_chat_ui_histories_keep_the_tree_invariants(make_proxy, fake_upstream):
    fake_upstream.responder = responder
    proxy = make_proxy(BIG_WINDOW)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        machine = type("ChatUiRun", (ChatUi,), {"proxy": proxy, "fake": fake_upstream,
                                                "http": http})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=40, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
