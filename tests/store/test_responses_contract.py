"""The `ResponseStore` part of the `Store` contract (proxy/store/base.py, migration 8), run
against every backend like test_store_contract.py: stored responses (upsert, tenants, the
chain of `previous_response_id`s oldest first, expiry) and Conversations-API conversations
with their ordered, paged items.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.store.response_types import ApiConversation, IdConflictError, StoredResponse
from tests import store_backends
from tests.store_backends import Backend

store_backend = store_backends.store_backend  # fixture: one run per backend


def response(rid: str, previous: str | None = None, *, tenant: str = "t1",
             status: str = "completed", expires_at: float | None = None,
             created_at: float = 1000.0) -> StoredResponse:
    return StoredResponse(
        response_id=rid, tenant=tenant, status=status, previous_response_id=previous,
        conversation_id=None, agent_id=None,
        input_items=[{"id": f"msg_{rid}", "type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": f"question {rid}"}]}],
        body={"id": rid, "object": "response", "status": status, "output": [],
              "ünï": "\u2603", "z": 1, "a": 2},
        created_at=created_at, expires_at=expires_at)


def item(item_id: str, text: str | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text or item_id}]}


def conversation(cid: str = "conv_1", tenant: str = "t1", **metadata: str) -> ApiConversation:
    return ApiConversation(conversation_id=cid, tenant=tenant, metadata=dict(metadata),
                           created_at=1234.5)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


# --- responses ------------------------------------------------------------------------------
def test_put_get_upsert_delete(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        first = response("resp_1", expires_at=5000.0)
        first.conversation_id, first.agent_id = "conv_x", "alice"
        await s.put_response(first)
        got = await s.get_response("t1", "resp_1")
        assert got == first
        assert list(got.body) == ["id", "object", "status", "output", "ünï", "z", "a"]
        # upsert by (tenant, id): every field replaced
        done = response("resp_1", "resp_0", status="failed", created_at=1001.0)
        await s.put_response(done)
        assert await s.get_response("t1", "resp_1") == done
        assert (await s.get_response("t1", "resp_1")).expires_at is None
        assert await s.get_response("t1", "resp_unknown") is None
        assert await s.delete_response("t1", "resp_1") is True
        assert await s.get_response("t1", "resp_1") is None
        assert await s.delete_response("t1", "resp_1") is False
        assert await s.delete_response("t1", "resp_unknown") is False

    store_backend.run(body)


def test_responses_are_per_tenant(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.put_response(response("resp_1"))
        await s.put_response(response("resp_2", "resp_1"))
        assert await s.get_response("t2", "resp_1") is None
        assert await s.response_chain("t2", "resp_2") == []
        assert await s.delete_response("t2", "resp_1") is False
        assert await s.get_response("t1", "resp_1") is not None
        # the same id in another tenant is another response, and a chain never crosses over
        await s.put_response(response("resp_1", tenant="t2", status="failed"))
        await s.put_response(response("resp_3", "resp_2", tenant="t2"))
        assert (await s.get_response("t1", "resp_1")).status == "completed"
        assert (await s.get_response("t2", "resp_1")).status == "failed"
        assert [r.response_id for r in await s.response_chain("t2", "resp_3")] == ["resp_3"]
        assert [r.response_id for r in await s.response_chain("t1", "resp_2")] == [
            "resp_1", "resp_2"]
        assert await s.delete_response("t2", "resp_1") is True
        assert (await s.get_response("t1", "resp_1")).status == "completed"

    store_backend.run(body)


def test_chain_is_oldest_first_and_limited(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        names = [f"resp_{n:02d}" for n in range(10)]
        previous = None
        for n, rid in enumerate(names):  # stored newest-id-last but ids not in pk order
            await s.put_response(response(rid, previous, created_at=1000.0 + n))
            previous = rid
        chain = await s.response_chain("t1", names[-1])
        assert [r.response_id for r in chain] == names
        assert chain[3] == response(names[3], names[2], created_at=1003.0)
        mid = await s.response_chain("t1", names[4])
        assert [r.response_id for r in mid] == names[:5]
        assert [r.response_id for r in await s.response_chain("t1", names[0])] == names[:1]
        # the limit keeps the newest
        limited = await s.response_chain("t1", names[-1], limit=3)
        assert [r.response_id for r in limited] == names[-3:]
        assert await s.response_chain("t1", names[-1], limit=0) == []
        assert await s.response_chain("t1", "resp_unknown") == []

    store_backend.run(body)


def test_chain_stops_at_a_deleted_or_missing_ancestor(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        for n in range(5):
            await s.put_response(response(f"resp_{n}", f"resp_{n - 1}" if n else None))
        assert await s.delete_response("t1", "resp_2") is True
        assert [r.response_id for r in await s.response_chain("t1", "resp_4")] == [
            "resp_3", "resp_4"]
        await s.put_response(response("resp_9", "resp_never_stored"))
        assert [r.response_id for r in await s.response_chain("t1", "resp_9")] == ["resp_9"]

    store_backend.run(body)


def test_chain_with_a_cycle_ends(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.put_response(response("resp_a"))
        await s.put_response(response("resp_b", "resp_a"))
        await s.put_response(response("resp_a", "resp_b"))  # rewritten into a loop
        assert [r.response_id for r in await s.response_chain("t1", "resp_b")] == [
            "resp_a", "resp_b"]
        await s.put_response(response("resp_self", "resp_self"))
        assert [r.response_id for r in await s.response_chain("t1", "resp_self")] == [
            "resp_self"]

    store_backend.run(body)


def test_expire_responses(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.put_response(response("resp_old", expires_at=100.0))
        await s.put_response(response("resp_edge", expires_at=200.0, tenant="t2"))
        await s.put_response(response("resp_new", "resp_old", expires_at=300.0))
        await s.put_response(response("resp_kept"))
        assert await s.expire_responses(50.0) == 0
        assert await s.expire_responses(200.0) == 2  # <= now, every tenant
        assert await s.get_response("t1", "resp_old") is None
        assert await s.get_response("t2", "resp_edge") is None
        assert [r.response_id for r in await s.response_chain("t1", "resp_new")] == ["resp_new"]
        assert await s.expire_responses(10.0 ** 12) == 1
        assert await s.get_response("t1", "resp_kept") is not None

    store_backend.run(body)


def test_deleting_an_agent_keeps_its_responses(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent = await s.ensure_agent("t1", "alice", store_backends.DEFAULT_BLOCKS)
        stored = response("resp_1")
        stored.agent_id = "alice"
        await s.put_response(stored)
        await s.delete_agent(agent.pk)
        assert await s.get_response("t1", "resp_1") == stored

    store_backend.run(body)


# --- conversations --------------------------------------------------------------------------
def test_conversation_create_get_update_delete(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.create_api_conversation(conversation(topic="x"), [item("msg_a"), item("msg_b")])
        got = await s.get_api_conversation("t1", "conv_1")
        assert got == conversation(topic="x")
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a", "msg_b"]
        assert await s.conversation_items("t1", "conv_1") == [item("msg_a"), item("msg_b")]
        updated = await s.update_api_conversation("t1", "conv_1", {"topic": "y", "n": "1"})
        assert updated == ApiConversation("conv_1", "t1", {"topic": "y", "n": "1"}, 1234.5)
        assert await s.get_api_conversation("t1", "conv_1") == updated
        assert await s.update_api_conversation("t1", "conv_none", {}) is None
        # an empty conversation
        await s.create_api_conversation(conversation("conv_2"), [])
        assert await s.conversation_items("t1", "conv_2") == []
        # deleting cascades to the items
        assert await s.delete_api_conversation("t1", "conv_1") is True
        assert await s.get_api_conversation("t1", "conv_1") is None
        assert await s.conversation_items("t1", "conv_1") == []
        assert await s.get_conversation_item("t1", "conv_1", "msg_a") is None
        assert await s.delete_api_conversation("t1", "conv_1") is False
        rows = await store_backend.sql(s, "SELECT count(*) FROM api_conversation_items")
        assert rows == [(0,)]
        # the id is free again
        await s.create_api_conversation(conversation(), [item("msg_a")])
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a"]

    store_backend.run(body)


def test_conversations_are_per_tenant(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.create_api_conversation(conversation(), [item("msg_a")])
        assert await s.get_api_conversation("t2", "conv_1") is None
        assert await s.update_api_conversation("t2", "conv_1", {"x": "y"}) is None
        assert await s.delete_api_conversation("t2", "conv_1") is False
        assert await s.add_conversation_items("t2", "conv_1", [item("msg_b")]) is False
        assert await s.conversation_items("t2", "conv_1") == []
        assert await s.list_conversation_items("t2", "conv_1") == ([], False)
        assert await s.get_conversation_item("t2", "conv_1", "msg_a") is None
        assert await s.delete_conversation_item("t2", "conv_1", "msg_a") is False
        # the same conversation id in another tenant is another conversation
        await s.create_api_conversation(conversation(tenant="t2", who="two"), [item("msg_a",
                                                                                     "two")])
        assert (await s.get_api_conversation("t1", "conv_1")).metadata == {}
        assert (await s.get_conversation_item("t2", "conv_1", "msg_a")) == item("msg_a", "two")
        assert (await s.get_conversation_item("t1", "conv_1", "msg_a")) == item("msg_a")
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a"]

    store_backend.run(body)


def test_conversation_id_conflicts(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.create_api_conversation(conversation(), [item("msg_a")])
        with pytest.raises(IdConflictError) as exc:
            await s.create_api_conversation(conversation(other="x"), [item("msg_z")])
        assert (exc.value.kind, exc.value.id) == ("conversation", "conv_1")
        assert (await s.get_api_conversation("t1", "conv_1")).metadata == {}
        # a batch repeating an id, or an id already in the conversation: nothing is written
        with pytest.raises(IdConflictError):
            await s.create_api_conversation(conversation("conv_2"), [item("m"), item("m")])
        assert await s.get_api_conversation("t1", "conv_2") is None
        with pytest.raises(IdConflictError) as exc:
            await s.add_conversation_items("t1", "conv_1", [item("msg_b"), item("msg_a")])
        assert (exc.value.kind, exc.value.id) == ("item", "msg_a")
        with pytest.raises(IdConflictError):
            await s.add_conversation_items("t1", "conv_1", [item("msg_c"), item("msg_c")])
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a"]
        for bad in ({"type": "message"}, {"id": 7}, {"id": ""}, {"id": "a\x00b"}):
            with pytest.raises(ValueError):
                await s.add_conversation_items("t1", "conv_1", [bad])
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a"]

    store_backend.run(body)


def test_add_items_appends_in_order(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.create_api_conversation(conversation(), [item("msg_1")])
        assert await s.add_conversation_items("t1", "conv_1", [item("msg_2"), item("msg_3")])
        assert await s.add_conversation_items("t1", "conv_1", [])
        assert await s.add_conversation_items("t1", "conv_none", [item("msg_x")]) is False
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_1", "msg_2", "msg_3"]
        # after a deletion in the middle, appends still go to the end
        assert await s.delete_conversation_item("t1", "conv_1", "msg_2") is True
        assert await s.add_conversation_items("t1", "conv_1", [item("msg_4")])
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_1", "msg_3", "msg_4"]
        # concurrent appends: each batch whole, none lost
        await asyncio.gather(*(s.add_conversation_items(
            "t1", "conv_1", [item(f"b{n}_0"), item(f"b{n}_1")]) for n in range(8)))
        got = ids(await s.conversation_items("t1", "conv_1"))
        assert len(got) == 3 + 16
        for n in range(8):
            assert got.index(f"b{n}_1") == got.index(f"b{n}_0") + 1

    store_backend.run(body)


def test_item_pagination(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        names = [f"msg_{n}" for n in range(7)]
        await s.create_api_conversation(conversation(), [item(n) for n in names[:4]])
        await s.add_conversation_items("t1", "conv_1", [item(n) for n in names[4:]])
        page, more = await s.list_conversation_items("t1", "conv_1")
        assert (ids(page), more) == (names[::-1], False)  # default: desc, 20
        # ascending, three at a time
        page, more = await s.list_conversation_items("t1", "conv_1", limit=3, order="asc")
        assert (ids(page), more) == (names[:3], True)
        page, more = await s.list_conversation_items("t1", "conv_1", limit=3, order="asc",
                                                     after=page[-1]["id"])
        assert (ids(page), more) == (names[3:6], True)
        page, more = await s.list_conversation_items("t1", "conv_1", limit=3, order="asc",
                                                     after=page[-1]["id"])
        assert (ids(page), more) == (names[6:], False)
        # exactly at the end: no more
        page, more = await s.list_conversation_items("t1", "conv_1", limit=1, order="asc",
                                                     after="msg_5")
        assert (ids(page), more) == (["msg_6"], False)
        page, more = await s.list_conversation_items("t1", "conv_1", order="asc",
                                                     after="msg_6")
        assert (page, more) == ([], False)
        # descending
        page, more = await s.list_conversation_items("t1", "conv_1", limit=4, order="desc")
        assert (ids(page), more) == (["msg_6", "msg_5", "msg_4", "msg_3"], True)
        page, more = await s.list_conversation_items("t1", "conv_1", limit=4, order="desc",
                                                     after="msg_3")
        assert (ids(page), more) == (["msg_2", "msg_1", "msg_0"], False)
        page, more = await s.list_conversation_items("t1", "conv_1", limit=3, order="desc",
                                                     after="msg_3")
        assert (ids(page), more) == (["msg_2", "msg_1", "msg_0"], False)
        # unknown cursor or conversation: an empty page
        assert await s.list_conversation_items("t1", "conv_1", after="msg_x") == ([], False)
        assert await s.list_conversation_items("t1", "conv_x") == ([], False)
        # a cursor of another conversation does not apply
        await s.create_api_conversation(conversation("conv_2"), [item("other")])
        assert await s.list_conversation_items("t1", "conv_1", after="other") == ([], False)
        with pytest.raises(ValueError):
            await s.list_conversation_items("t1", "conv_1", order="sideways")

    store_backend.run(body)


def test_get_and_delete_one_item(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        await s.create_api_conversation(conversation(), [item("msg_a"), item("msg_b", "ünï")])
        await s.create_api_conversation(conversation("conv_2"), [item("msg_c")])
        assert await s.get_conversation_item("t1", "conv_1", "msg_b") == item("msg_b", "ünï")
        assert await s.get_conversation_item("t1", "conv_1", "msg_c") is None  # conv_2's
        assert await s.get_conversation_item("t1", "conv_1", "msg_x") is None
        assert await s.get_conversation_item("t1", "conv_x", "msg_a") is None
        assert await s.delete_conversation_item("t1", "conv_1", "msg_c") is False
        assert await s.delete_conversation_item("t1", "conv_1", "msg_a") is True
        assert await s.delete_conversation_item("t1", "conv_1", "msg_a") is False
        assert await s.get_conversation_item("t1", "conv_1", "msg_a") is None
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_b"]
        assert ids(await s.conversation_items("t1", "conv_2")) == ["msg_c"]
        # a deleted item's id may be used again
        assert await s.add_conversation_items("t1", "conv_1", [item("msg_a", "again")])
        assert await s.conversation_items("t1", "conv_1") == [item("msg_b", "ünï"),
                                                               item("msg_a", "again")]

    store_backend.run(body)


def test_nul_characters_in_ids_and_payloads(store_backend: Backend) -> None:
    """Ids with NUL are never stored (Postgres text cannot hold one): lookups find nothing
    instead of failing; JSON payloads keep them."""
    async def body(s: Any) -> None:
        stored = response("resp_1")
        stored.body["text"] = "a\x00b"
        await s.put_response(stored)
        assert (await s.get_response("t1", "resp_1")).body["text"] == "a\x00b"
        assert await s.get_response("t1", "resp_\x00") is None
        assert await s.delete_response("t\x00", "resp_1") is False
        assert await s.response_chain("t1", "resp_\x00") == []
        await s.create_api_conversation(conversation(k="v\x00"), [item("msg_a", "x\x00y")])
        assert (await s.get_api_conversation("t1", "conv_1")).metadata == {"k": "v\x00"}
        assert await s.get_conversation_item("t1", "conv_1", "msg_a") == item("msg_a", "x\x00y")
        assert await s.get_api_conversation("t1", "conv_\x00") is None
        assert await s.get_conversation_item("t1", "conv_1", "m\x00") is None
        assert await s.list_conversation_items("t1", "conv_1", after="m\x00") == ([], False)
        assert await s.delete_conversation_item("t1", "conv_1", "m\x00") is False
        assert await s.add_conversation_items("t1", "conv_\x00", [item("msg_b")]) is False
        assert await s.update_api_conversation("t1", "conv_\x00", {}) is None
        assert await s.delete_api_conversation("t1", "conv_\x00") is False
        assert await s.conversation_items("t1", "conv_\x00") == []

    store_backend.run(body)


def test_response_tables_survive_reopen(store_backend: Backend) -> None:
    async def write(s: Any) -> None:
        await s.put_response(response("resp_1"))
        await s.create_api_conversation(conversation(), [item("msg_a")])

    async def read(s: Any) -> None:
        assert (await s.get_response("t1", "resp_1")) == response("resp_1")
        assert ids(await s.conversation_items("t1", "conv_1")) == ["msg_a"]

    store_backend.run(write)
    store_backend.run(read)


def test_find_items_by_id(store_backend: Backend) -> None:
    """`item_reference` resolution: input and output items of stored responses by their ids,
    per tenant, the newest response's when an id repeats, gone with the response."""
    async def body(s: Any) -> None:
        first = response("resp_1")
        first.body["output"] = [{"id": "msg_out1", "type": "message", "role": "assistant",
                                 "status": "completed", "content": [
                                     {"type": "output_text", "text": "one", "annotations": []}]},
                                {"id": "fc_1", "type": "function_call", "call_id": "c1",
                                 "name": "f", "arguments": "{}", "status": "completed"}]
        await s.put_response(first)
        found = await s.find_items("t1", ["msg_out1", "fc_1", "msg_resp_1", "msg_nope"])
        assert found == {"msg_out1": first.body["output"][0], "fc_1": first.body["output"][1],
                         "msg_resp_1": first.input_items[0]}
        assert await s.find_items("t2", ["msg_out1"]) == {}
        assert await s.find_items("t1", []) == {}
        assert await s.find_items("t1", ["bad\x00id"]) == {}
        # upserting the same response replaces its item rows (a background response's
        # queued → completed writes): the old output ids go, the new ones come
        first.body["output"] = [{"id": "msg_out2", "type": "message", "role": "assistant",
                                 "status": "completed", "content": []}]
        await s.put_response(first)
        assert set(await s.find_items("t1", ["msg_out1", "msg_out2"])) == {"msg_out2"}
        await s.put_response(first)  # the same ids again: nothing doubles
        # a reused id: the newest response's item
        second = response("resp_2", "resp_1")
        second.input_items = [item("msg_out2", "resent by the client")]
        await s.put_response(second)
        assert (await s.find_items("t1", ["msg_out2"]))["msg_out2"] == second.input_items[0]
        await s.delete_response("t1", "resp_2")
        assert (await s.find_items("t1", ["msg_out2"]))["msg_out2"]["role"] == "assistant"
        await s.delete_response("t1", "resp_1")
        assert await s.find_items("t1", ["msg_out2", "msg_resp_1"]) == {}

    store_backend.run(body)
