"""A transcript opened at its end (`order=desc`, paged back with `before`) and the tree's
`parent_seq` on every message: what the inspector's newest-first view and its branches use
(docs/api.md), on both backends."""

from __future__ import annotations

import httpx

from tests.agents_api_check import AgentsApi

MODEL = "gpt-4o-mini"
PATH = "/v1/agents/ada/conversations/talk/messages"


def chat(server, messages: list[dict]) -> dict:
    response = httpx.post(f"{server.base_url}/chat/completions", timeout=30,
                          headers={"x-agent-id": "ada", "x-conversation-id": "talk"},
                          json={"model": MODEL, "messages": messages})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def test_newest_first_pages_back_to_the_start(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    for i in range(5):
        chat(server, [{"role": "user", "content": f"note {i}"}])
    everything = [m["seq"] for m in api.get(PATH, params={"limit": 1000}).json()["data"]]
    seen: list[int] = []
    page = api.get(PATH, params={"order": "desc", "limit": 3}).json()
    while True:
        seen += [m["seq"] for m in page["data"]]
        assert page["next_after"] is None
        if not page["has_more"]:
            assert page["next_before"] is None
            break
        assert page["next_before"] == seen[-1]
        page = api.get(PATH, params={"order": "desc", "limit": 3,
                                     "before": page["next_before"]}).json()
    assert seen == everything[::-1]
    # ascending pages keep their cursor; `before` bounds them too
    asc = api.get(PATH, params={"limit": 2, "before": everything[3]}).json()
    assert [m["seq"] for m in asc["data"]] == everything[:2] and asc["next_after"] == everything[1]
    assert "next_before" not in asc or asc["next_before"] is None


def test_branches_share_a_parent(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    first = [{"role": "user", "content": "Tell me about owls"}]
    owls = chat(server, first)
    chat(server, [*first, owls, {"role": "user", "content": "And about cats"}])
    chat(server, [*first, owls, {"role": "user", "content": "And about dogs"}])  # an edit
    rows = api.get(PATH, params={"include_superseded": "true", "order": "desc"}).json()["data"]
    users = {m["content"]: m for m in rows if m["role"] == "user"}
    cats, dogs = users["And about cats"], users["And about dogs"]
    assert cats["superseded"] and not dogs["superseded"]
    assert cats["parent_seq"] == dogs["parent_seq"] > 0  # siblings: the branch point
    assert users["Tell me about owls"]["parent_seq"] == 0
