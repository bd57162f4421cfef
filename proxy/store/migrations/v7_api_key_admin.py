"""Migration 7: a stored API key may be an admin key (`memproxy keys add --admin`).

`api_keys.admin`: false for every key stored before, so existing keys keep their meaning.

Shipped: never edit it (tests/store/test_migrations_frozen.py pins its SQL); add a migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = (
    "ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
)

POSTGRES: tuple[str, ...] = (
    "ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false",
)
