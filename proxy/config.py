"""Settings: a TOML file, then `MEMPROXY_<SECTION>_<KEY>` environment overrides, then CLI flags.

Every key is documented in `config.example.toml`. Sections are pydantic models with
`extra="forbid"`, so a misspelt key is an error at start-up rather than a silent default.
Secret values may be written as `env:VAR` in the file and are resolved at load time.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1


class DatabaseSettings(_Section):
    url: str = "sqlite:///memproxy.db"


class UpstreamSettings(_Section):
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    forward_client_key: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0
    max_retries: int = 2
    models_cache_s: float = 300.0


class AuthSettings(_Section):
    keys: dict[str, str] = Field(default_factory=dict)
    admin_keys: list[str] = Field(default_factory=list)


class IdentitySettings(_Section):
    agent_headers: list[str] = Field(
        default_factory=lambda: ["X-Agent-Id", "X-OpenWebUI-User-Id"]
    )
    conversation_headers: list[str] = Field(
        default_factory=lambda: ["X-Conversation-Id", "X-OpenWebUI-Chat-Id"]
    )
    history_client_headers: list[str] = Field(default_factory=lambda: ["X-OpenWebUI-Chat-Id"])
    agent_from_user: bool = False
    require_agent: bool = False
    auxiliary_patterns: list[str] = Field(default_factory=lambda: [r"^\s*### Task:"])

    @field_validator("auxiliary_patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value


class BlockSettings(_Section):
    value: str = ""
    description: str = ""
    limit: int = 5000
    read_only: bool = False


def _default_blocks() -> dict[str, BlockSettings]:
    return {
        "persona": BlockSettings(
            description=(
                "Who you are and how you behave. Edit it when the user asks you to change "
                "how you act."
            ),
        ),
        "human": BlockSettings(
            description=(
                "What you know about the user: name, preferences, facts they shared. "
                "Keep it current and concise."
            ),
        ),
    }


class AgentSettings(_Section):
    max_steps: int = 8
    lock_timeout_s: float = 30.0
    lease_ttl_s: float = 30.0
    base_instructions: str | None = None
    blocks: dict[str, BlockSettings] = Field(default_factory=_default_blocks)


class MemorySettings(_Section):
    default_context_window: int = 8192
    reserve_output_tokens: int = 1024
    warn_at: float = 0.75
    compact_at: float = 0.9
    compact_to: float = 0.6
    summarizer_model: str | None = None
    summarizer_timeout_s: float = 60.0


class ModelSettings(_Section):
    context_window: int | None = None


class LimitsSettings(_Section):
    max_body_bytes: int = 32 * 1024 * 1024
    max_messages: int = 50_000
    max_message_chars: int = 4_000_000


class LoggingSettings(_Section):
    level: str = "INFO"
    include_content: bool = False


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("models")
    @classmethod
    def _non_empty_patterns(cls, value: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        for pattern in value:
            if not pattern:
                raise ValueError("model patterns must not be empty")
        return value


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
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
