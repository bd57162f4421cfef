"""From a TOML file and the environment to `Settings`: precedence, `env:VAR` secrets,
`MEMPROXY_<SECTION>_<KEY>` overrides, and a warning for every variable nothing reads.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .sections import Settings


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


ENV_PREFIX = "MEMPROXY_"


def _resolve_env_refs(value: Any, environ: dict[str, str]) -> Any:
    """Replace `env:VAR` strings by the variable's value, recursively."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            raise ConfigError(f"environment variable {name!r} named by {value!r} is not set")
        return environ[name]
    if isinstance(value, dict):
        return {k: _resolve_env_refs(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_refs(v, environ) for v in value]
    return value


def _coerce_env(raw: str, annotation_default: Any) -> Any:
    """Environment values are strings; lists and dicts may be given as JSON."""
    if isinstance(annotation_default, (list, dict)):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"expected JSON, got {raw!r}") from exc
    return raw


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Map `MEMPROXY_<SECTION>_<KEY>` variables onto the sections that exist."""
    overrides: dict[str, dict[str, Any]] = {}
    sections = {
        name: field.default_factory()  # type: ignore[misc]
        for name, field in Settings.model_fields.items()
        if name != "models"
    }
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section_name, section in sections.items():
            prefix = section_name + "_"
            if rest.startswith(prefix):
                key = rest[len(prefix) :]
                if key in type(section).model_fields:
                    default = getattr(section, key)
                    try:
                        value = _coerce_env(raw, default)
                    except ConfigError as exc:
                        raise ConfigError(f"{var}: {exc}") from exc
                    overrides.setdefault(section_name, {})[key] = value
                break
    return overrides


def setting_variables() -> list[str]:
    """Every `MEMPROXY_<SECTION>_<KEY>` name that `load_settings` reads."""
    return [f"{ENV_PREFIX}{section}_{key}".upper()
            for section, field in Settings.model_fields.items() if section != "models"
            for key in field.annotation.model_fields]  # type: ignore[union-attr]


def unknown_variables(environ: dict[str, str], also_known: Iterable[str] = ()) -> list[str]:
    """A warning for each `MEMPROXY_*` variable that nothing reads: `_env_overrides` skips
    them, so a typo would otherwise be silently ignored. Names the closest known variable
    when one is close. `also_known`: the variables the caller reads itself (the CLI's)."""
    known = [name.upper() for name in [*also_known, *setting_variables()]]
    stems = [name[len(ENV_PREFIX):] for name in known]
    warnings = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var.upper() in known:
            continue
        stem = var[len(ENV_PREFIX):].upper()
        # MEMPROXY_PORT: a key without its section; else the nearest spelling
        close = [s for s in stems if s.endswith("_" + stem)] or difflib.get_close_matches(
            stem, stems, n=1, cutoff=0.75)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        warnings.append(f"unknown environment variable {var} is ignored{hint}")
    return warnings


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (tables merge, other values replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Build settings from defaults, the TOML file, the environment and explicit overrides.

    Precedence, lowest first: defaults, `OPENAI_*` fallbacks, the file, `MEMPROXY_*`
    variables, `overrides` (the CLI flags).
    """
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    fallback: dict[str, Any] = {}
    if environ.get("OPENAI_BASE_URL"):
        fallback["base_url"] = environ["OPENAI_BASE_URL"]
    if environ.get("OPENAI_API_KEY"):
        fallback["api_key"] = environ["OPENAI_API_KEY"]
    if fallback:
        data["upstream"] = fallback
    if path is not None:
        try:
            with open(path, "rb") as fh:
                file_data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        data = merge(data, _resolve_env_refs(file_data, environ))
    data = merge(data, _env_overrides(environ))
    if overrides:
        data = merge(data, {k: v for k, v in overrides.items() if v})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
