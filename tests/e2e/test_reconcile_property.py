"""Hypothesis drives a chat-UI-like client through random appends, regenerates, edits and
retries against a real memproxy. After every request: the stored visible transcript is exactly
the client's view, the prompt sent upstream is that view, nothing is stored twice and no
superseded message is in context."""

from __future__ import annotations

import itertools

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import storage

MODEL = "gpt-4o-mini"
_ids = itertools.count()

operation = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(["hi", "tell me more", "ok", "why?", "hi"])),
    st.tuples(st.just("regenerate"), st.none()),
    st.tuples(st.just("edit"), st.integers(0, 10)),
    st.tuples(st.just("retry"), st.none()),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(operation, min_size=1, max_size=8))
def test_random_client_histories_keep_the_invariants(make_proxy_once, ops):
    proxy, fake = make_proxy_once
    conversation = f"c{next(_ids)}"
    headers = {"X-Agent-Id": "prop", "X-OpenWebUI-Chat-Id": conversation}
    history: list[dict] = []
    last_request: list[dict] | None = None

    def send(messages, extra=None):
        response = httpx.post(f"{proxy.base_url}/chat/completions", timeout=30,
                              headers={**headers, **(extra or {})},
                              json={"model": MODEL, "messages": messages})
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    for kind, arg in ops:
        if kind == "append":
            history.append({"role": "user", "content": f"{arg} #{len(history)}"})
        elif kind == "regenerate":
            if not history:
                continue
            history.pop()  # drop the last reply and ask again
        elif kind == "edit":
            users = [i for i, m in enumerate(history) if m["role"] == "user"]
            if not users:
                continue
            i = users[arg % len(users)]
            history = [*history[:i], {"role": "user", "content": f"edited #{i} {arg}"}]
        elif kind == "retry":
            if last_request is None:
                continue
            calls = len(fake.requests)
            again = send(last_request, {"x-stainless-retry-count": "1"})
            assert again == history[-1]["content"]
            assert len(fake.requests) == calls  # replayed, not recomputed
            continue
        last_request = list(history)
        reply = send(last_request)
        sent = [{"role": m["role"], "content": m["content"]} for m in fake.last.json["messages"]
                if m["role"] != "system"]
        assert sent == history
        history.append({"role": "assistant", "content": reply})

        url = proxy.settings.database.url
        stored = storage.transcript(url, "prop", conversation)
        assert [(m.role, m.data["content"]) for m in stored] == \
            [(m["role"], m["content"]) for m in history]
        everything = storage.transcript(url, "prop", conversation, visible_only=False,
                                        include_superseded=True)
        assert not any(m.in_context and m.superseded for m in everything)
        seqs = [m.seq for m in everything]
        assert len(seqs) == len(set(seqs))
