"""Settings: a TOML file, then `MEMPROXY_<SECTION>_<KEY>` environment overrides, then CLI flags.

Every key is documented in `config.example.toml`. The sections are pydantic models
(`sections.py`) with `extra="forbid"`, so a misspelt key is an error at start-up rather than a
silent default; `loading.py` reads the file and the environment. Secret values may be written
as `env:VAR` in the file and are resolved at load time.
"""

from .loading import (
    ENV_PREFIX,
    ConfigError,
    load_settings,
    merge,
    setting_variables,
    unknown_variables,
)
from .sections import (
    AUXILIARY_PATTERNS,
    AUXILIARY_SYSTEM_PATTERNS,
    DATABASE_SCHEMES,
    ABSettings,
    AgentSettings,
    AuthSettings,
    BlockSettings,
    DatabaseSettings,
    EmbeddingsSettings,
    FallbackSettings,
    IdentitySettings,
    LimitsSettings,
    LoggingSettings,
    MemorySettings,
    ModelSettings,
    ResponsesSettings,
    RetentionSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
    http_url,
)

__all__ = [
    "ABSettings",
    "AUXILIARY_PATTERNS",
    "AUXILIARY_SYSTEM_PATTERNS",
    "AgentSettings",
    "AuthSettings",
    "BlockSettings",
    "ConfigError",
    "DATABASE_SCHEMES",
    "DatabaseSettings",
    "ENV_PREFIX",
    "EmbeddingsSettings",
    "FallbackSettings",
    "IdentitySettings",
    "LimitsSettings",
    "LoggingSettings",
    "MemorySettings",
    "ModelSettings",
    "ResponsesSettings",
    "RetentionSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "http_url",
    "load_settings",
    "merge",
    "setting_variables",
    "unknown_variables",
]
