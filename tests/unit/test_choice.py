"""The client's tool_choice on the memory path (core/choice.py) and the answer's pass-through
pieces (core/answers.py): pure functions, literal inputs."""

from __future__ import annotations

from proxy.core.answers import AnswerBuilder, FieldsPiece, answer_of, merge_usage
from proxy.core.choice import ToolChoice, legacy_reply, legacy_to_tools

MEMORY = {"type": "function", "function": {"name": "core_memory_append"}}
WEATHER = {"type": "function", "function": {"name": "get_weather"}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
CLIENT = frozenset({"get_weather", "get_time"})
TOOLS = [WEATHER, CLOCK, MEMORY]


def names(tools):
    return [t["function"]["name"] for t in tools]


def test_without_a_requirement_the_choice_is_forwarded_and_the_last_step_answers_in_text():
    for original in (None, "auto", "none"):
        choice = ToolChoice.of(original)
        assert choice.step(TOOLS, CLIENT, last=False) == (TOOLS, original)
        assert choice.step(TOOLS, CLIENT, last=True) == (TOOLS, "none")
        assert choice.satisfied([])


def test_required_keeps_memory_callable_until_the_last_step():
    choice = ToolChoice.of("required")
    tools, sent = choice.step(TOOLS, CLIENT, last=False)
    assert (names(tools), sent) == (names(TOOLS), "required")
    tools, sent = choice.step(TOOLS, CLIENT, last=True)
    assert (names(tools), sent) == (["get_weather", "get_time"], "required")
    assert not choice.satisfied([]) and choice.satisfied([{"function": {"name": "get_time"}}])


def test_a_forced_function_narrows_the_clients_tools_to_it():
    forced = {"type": "function", "function": {"name": "get_weather"}}
    choice = ToolChoice.of(forced)
    assert choice.forced == "get_weather"
    tools, sent = choice.step(TOOLS, CLIENT, last=False)
    assert (names(tools), sent) == (["get_weather", "core_memory_append"], "required")
    tools, sent = choice.step(TOOLS, CLIENT, last=True)
    assert (names(tools), sent) == (["get_weather"], forced)


def test_a_malformed_choice_is_no_requirement():
    for value in ({"type": "function"}, {"function": {"name": ""}}, "sometimes", 3):
        assert not ToolChoice.of(value).required


def test_legacy_functions_become_tools():
    fn = {"name": "get_weather", "parameters": {}}
    body, legacy = legacy_to_tools({"model": "m", "functions": [fn, "junk"],
                                    "function_call": {"name": "get_weather"}})
    assert legacy and "functions" not in body and "function_call" not in body
    assert body["tools"] == [{"type": "function", "function": fn}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    body, _ = legacy_to_tools({"functions": [fn], "function_call": "none"})
    assert body["tool_choice"] == "none"
    body, _ = legacy_to_tools({"functions": [fn], "tools": [CLOCK], "tool_choice": "auto",
                               "function_call": "none"})
    assert body["tools"] == [CLOCK] and body["tool_choice"] == "auto"
    assert legacy_to_tools({"functions": []}) == ({"functions": []}, False)


def test_legacy_reply_has_the_first_call_as_function_call():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "function": {"name": "g", "arguments": "{}"}}]}
    assert legacy_reply(message) == {"role": "assistant", "content": None,
                                     "function_call": {"name": "f", "arguments": "{}"}}
    assert legacy_reply({"role": "assistant", "content": "x"}) == {"role": "assistant",
                                                                   "content": "x"}


def test_usage_sums_nested_details_and_ignores_junk():
    total: dict = {}
    merge_usage(total, {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2},
                        "cost": 0.5, "flag": True, "note": "x"})
    merge_usage(total, {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 1},
                        "cost": 0.25})
    merge_usage(total, None)
    assert total == {"prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3},
                     "cost": 0.75}


def test_an_answer_keeps_fields_it_does_not_interpret():
    answer = answer_of({"id": "x", "service_tier": "flex", "provider": "p", "choices": [{
        "message": {"role": "assistant", "content": "hi", "annotations": [1], "audio": None},
        "logprobs": {"content": []}}]})
    assert answer.fields == {"annotations": [1], "audio": None}
    assert answer.logprobs == {"content": []}
    assert answer.envelope == {"service_tier": "flex", "provider": "p"}


def test_streamed_fields_fold_into_the_whole_message():
    builder = AnswerBuilder()

    def chunk(delta, logprobs=None, **top):
        return {"id": "x", **top, "choices": [{"index": 0, "delta": delta,
                                                "logprobs": logprobs}]}

    pieces = builder.feed(chunk({"reasoning_content": "thi"}, service_tier="flex",
                                obfuscation="zz"))
    assert pieces == [FieldsPiece({"reasoning_content": "thi"}, None)]
    builder.feed(chunk({"reasoning_content": "nk", "annotations": [1]}))
    builder.feed(chunk({"content": "a", "annotations": [2]}, {"content": [{"token": "a"}]}))
    builder.feed(chunk({"content": "b"}, {"content": [{"token": "b"}]}))
    answer = builder.finish()
    assert answer.content == "ab"
    assert answer.fields == {"reasoning_content": "think", "annotations": [1, 2]}
    assert answer.logprobs == {"content": [{"token": "a"}, {"token": "b"}]}
    assert answer.envelope == {"service_tier": "flex"}
