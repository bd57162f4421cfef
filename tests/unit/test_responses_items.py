"""Responses input items (pure): normalizing what clients send, and turning items into chat
messages — the errors name the exact item, the messages keep order and pair every tool output
with its call."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import ProxyError
from proxy.responses import (
    chain_items,
    check_call_ids,
    drop_orphan_outputs,
    items_to_messages,
    normalize_input,
    output_items,
)
from tests.openapi_check import validate


def error_of(value, param="input") -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        normalize_input(value, param)
    assert caught.value.status == 400
    return caught.value


def test_a_string_is_one_user_message_with_an_id():
    [item] = normalize_input("hello")
    assert item["id"].startswith("msg_") and len(item["id"]) > 36
    assert item == {"id": item["id"], "type": "message", "role": "user", "status": "completed",
                    "content": [{"type": "input_text", "text": "hello"}]}
    assert items_to_messages([item]) == [{"role": "user", "content": "hello"}]


def test_easy_messages_of_every_role_keep_their_role_and_text():
    items = normalize_input([
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "message", "role": "assistant", "content": "a"},
    ])
    assert [i["type"] for i in items] == ["message"] * 4
    assert items[3]["content"] == [{"type": "output_text", "text": "a", "annotations": [],
                                    "logprobs": []}]
    assert items_to_messages(items) == [
        {"role": "developer", "content": "be brief"}, {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_given_ids_are_kept():
    [item] = normalize_input([{"id": "msg_mine", "role": "user", "content": "x"}])
    assert item["id"] == "msg_mine"


def test_assistant_parts_output_text_and_refusal():
    [item] = normalize_input([{"role": "assistant", "content": [
        {"type": "output_text", "text": "a", "annotations": []},
        {"type": "refusal", "refusal": "no"}]}])
    assert items_to_messages([item]) == [{"role": "assistant", "content": "a", "refusal": "no"}]


def test_images_and_files_become_chat_parts():
    [item] = normalize_input([{"role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,AA"},
        {"type": "input_file", "file_id": "file-1"}]}])
    [message] = items_to_messages([item])
    assert message["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA",
                                  "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-1"}}]


def test_function_calls_join_the_assistant_message_before_them_and_outputs_become_tool():
    items = normalize_input([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "checking"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "function_call", "call_id": "c3", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c3", "output": ""},
    ])
    assert [i["id"][:3] for i in items] == ["msg", "msg", "rs_", "fc_", "fc_", "fco", "fco",
                                            "fc_", "fco"]
    assert items_to_messages(items) == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"a\":1}"}},
            {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c3", "content": ""},
    ]


@pytest.mark.parametrize(("value", "param", "words"), [
    (5, "input", "string or a list"),
    ([1], "input[0]", "must be an object"),
    ([{"content": "x"}], "input[0].type", "required"),
    ([{"role": "tool", "content": "x"}], "input[0].role", "user, assistant"),
    ([{"role": "user"}], "input[0].content", "string or a list"),
    ([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}],
     "input[0].content[0].type", "input_text"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "x"}]}],
     "input[0].content[0].type", "assistant"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}],
     "input[0].content[0].type", "input_audio"),
    ([{"role": "user", "content": [{"type": "input_text"}]}],
     "input[0].content[0].text", "string"),
    ([{"role": "user", "content": ["x"]}], "input[0].content[0]", "object"),
    ([{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}],
     "input[0].content[0].type", "user messages"),
    ([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}],
     "input[0].content[0].file_id", "image_url"),
    ([{"role": "user", "content": [{"type": "input_image"}]}],
     "input[0].content[0].image_url", "non-empty"),
    ([{"role": "user", "content": [{"type": "input_file", "file_url": "https://x"}]}],
     "input[0].content[0].file_url", "not supported"),
    ([{"role": "user", "content": [{"type": "input_file", "filename": "a"}]}],
     "input[0].content[0].file_data", "file_data or file_id"),
    ([{"role": "user", "content": [{"type": "input_file", "file_data": 3}]}],
     "input[0].content[0].file_data", "string"),
    ([{"role": "user", "content": "x"}, {"type": "function_call", "name": "f", "arguments": ""}],
     "input[1].call_id", "non-empty"),
    ([{"type": "function_call", "call_id": "c", "arguments": "{}"}], "input[0].name", "name"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}],
     "input[0].arguments", "string"),
    ([{"type": "function_call_output", "call_id": "c"}], "input[0].output", "input_text"),
    ([{"type": "function_call_output", "call_id": "c",
       "output": [{"type": "input_image", "image_url": "u"}]}],
     "input[0].output[0]", "input_text"),
    ([{"type": "function_call_output", "output": "x"}], "input[0].call_id", "call_id"),
    ([{"type": "reasoning", "summary": "x"}], "input[0].summary", "list"),
    ([{"role": "user", "content": "x", "status": "done"}], "input[0].status", "completed"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "", "status": 1}],
     "input[0].status", "completed"),
    ([{"type": "item_reference"}], "input[0].id", "id"),
    ([{"type": "item_reference", "id": 5}], "input[0].id", "id"),
    ([{"type": "web_search_call", "id": "ws"}], "input[0].type", "web_search_call"),
])
def test_bad_items_are_400s_naming_the_field(value, param, words):
    error = error_of(value)
    assert error.param == param
    assert words in error.message
    assert error.message.startswith(param.split(".")[0].split("[")[0])


def test_the_param_prefix_is_the_callers():
    assert error_of([1], "items").param == "items[0]"


def test_an_output_must_follow_its_call():
    history = normalize_input([{"type": "function_call", "call_id": "old", "name": "f",
                                "arguments": "{}"}])
    items = normalize_input([{"type": "function_call_output", "call_id": "old", "output": "x"},
                             {"type": "function_call_output", "call_id": "new", "output": "y"}])
    with pytest.raises(ProxyError) as caught:
        check_call_ids(history, items)
    assert caught.value.param == "input[1].call_id" and "'new'" in caught.value.message
    check_call_ids(history, items[:1])


def test_chain_items_are_each_responses_input_then_output_oldest_first():
    first = SimpleNamespace(input_items=normalize_input("one"),
                            body={"output": output_items({"content": "1"})})
    second = SimpleNamespace(input_items=normalize_input("two"),
                             body={"output": output_items({"content": "2"})})
    items = chain_items([first, second])
    assert [m["content"] for m in items_to_messages(items)] == ["one", "1", "two", "2"]
    assert chain_items([]) == []


# -- properties ---------------------------------------------------------------------------------

texts = st.text(max_size=12)
names = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)


@st.composite
def conversations(draw):
    """Well-formed input: messages, reasoning items, and runs of calls each answered later."""
    items: list[dict] = []
    expected: list[tuple] = []  # (role, content or call ids) per chat message
    calls = 0
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["user", "assistant", "system", "developer", "calls",
                                     "reasoning"]))
        if kind == "reasoning":
            items.append({"type": "reasoning", "summary": []})
        elif kind == "calls":
            ids = [f"call_{calls + k}" for k in range(draw(st.integers(1, 3)))]
            calls += len(ids)
            items += [{"type": "function_call", "call_id": c, "name": draw(names),
                       "arguments": draw(texts)} for c in ids]
            if expected and expected[-1][0] == "assistant" and _next_to_last(items, len(ids)):
                expected[-1] = ("assistant", expected[-1][1], expected[-1][2] + ids)
            else:
                expected.append(("assistant", None, ids))
            outputs = [{"type": "function_call_output", "call_id": c, "output": draw(texts)}
                       for c in draw(st.permutations(ids))]
            items += outputs
            expected += [("tool", o["output"], o["call_id"]) for o in outputs]
        else:
            chunks = draw(st.one_of(texts, st.lists(texts, min_size=1, max_size=3)))
            if isinstance(chunks, str):
                items.append({"role": kind, "content": chunks})
                text = chunks
            else:  # content parts: the assistant's joined, other roles' kept as text parts
                kind_of = "output_text" if kind == "assistant" else "input_text"
                items.append({"role": kind, "content": [{"type": kind_of, "text": c}
                                                        for c in chunks]})
                text = ("".join(chunks) if kind == "assistant" or len(chunks) == 1
                        else [{"type": "text", "text": c} for c in chunks])
            expected.append((kind, text, []) if kind == "assistant" else (kind, text))
    return items, expected


def _next_to_last(items: list[dict], run: int) -> bool:
    """Whether the item before the run of calls just added (reasoning aside) was assistant."""
    before = [i for i in items[:-run] if i.get("type") != "reasoning"]
    return bool(before) and before[-1].get("role") == "assistant"


@settings(max_examples=200, deadline=None)
@given(conversations())
def test_messages_keep_order_and_every_tool_output_follows_its_call(case):
    raw, expected = case
    items = normalize_input(raw)
    assert normalize_input(items) == items  # normalizing twice changes nothing (ids kept)
    check_call_ids([], items)
    messages = items_to_messages(items)
    if messages:
        validate("CreateChatCompletionRequest", {"model": "m", "messages": messages})
    seen: set[str] = set()
    got = []
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in seen
            got.append(("tool", message["content"], message["tool_call_id"]))
        elif message["role"] == "assistant":
            ids = [c["id"] for c in message.get("tool_calls", [])]
            seen.update(ids)
            got.append(("assistant", message["content"], ids))
        else:
            got.append((message["role"], message["content"]))
    assert got == expected


tool_calls = st.lists(st.tuples(names, texts), max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(min_size=1, max_size=20)), tool_calls,
       st.one_of(st.none(), st.text(min_size=1, max_size=5)))
def test_output_items_round_trip_to_the_reply(content, calls, refusal):
    reply = {"role": "assistant", "content": content, "tool_calls": [
        {"id": f"call_{k}", "type": "function", "function": {"name": n, "arguments": a}}
        for k, (n, a) in enumerate(calls)]}
    if refusal:
        reply["refusal"] = refusal
    items = output_items(reply)
    assert normalize_input(items) == items  # output items are valid input as they are
    messages = items_to_messages(items)
    if not content and not calls and not refusal:
        assert messages == []
        return
    [message] = messages
    assert message["role"] == "assistant"
    assert message["content"] == content
    assert message.get("refusal") == refusal
    assert message.get("tool_calls", []) == reply["tool_calls"]


def test_a_call_without_its_output_is_a_400():
    items = normalize_input([{"type": "function_call", "call_id": "c1", "name": "f",
                              "arguments": "{}"}, {"role": "user", "content": "never mind"}])
    with pytest.raises(ProxyError) as caught:
        check_call_ids([], items)
    assert caught.value.param == "input" and "'c1'" in caught.value.message


def test_outputs_whose_call_left_the_stored_chain_are_dropped():
    history = normalize_input([
        {"type": "function_call_output", "call_id": "gone", "output": "x"},
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "kept", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "kept", "output": "y"}])
    assert [i.get("call_id") for i in drop_orphan_outputs(history)] == [None, "kept", "kept"]


def test_an_assistant_message_without_text_has_empty_content_not_null():
    [item] = normalize_input([{"role": "assistant", "content": []}])
    assert items_to_messages([item]) == [{"role": "assistant", "content": ""}]


def test_item_references_are_kept_then_resolved():
    from proxy.errors import ProxyError
    from proxy.responses import references, resolve_references

    items = normalize_input([{"role": "user", "content": "hi"},
                             {"type": "item_reference", "id": "msg_a"}, {"id": "fc_b"}])
    assert items[1] == {"type": "item_reference", "id": "msg_a"}
    assert items[2] == {"type": "item_reference", "id": "fc_b"}
    assert references(items) == ["msg_a", "fc_b"]
    a = {"id": "msg_a", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "x", "annotations": []}]}
    b = {"id": "fc_b", "type": "function_call", "call_id": "c", "name": "f",
         "arguments": "{}", "status": "completed"}
    assert resolve_references(items, {"msg_a": a, "fc_b": b}) == [items[0], a, b]
    with pytest.raises(ProxyError) as info:
        resolve_references(items, {"msg_a": a})
    assert (info.value.status, info.value.param, info.value.code) == (
        404, "input[2]", "item_not_found")
