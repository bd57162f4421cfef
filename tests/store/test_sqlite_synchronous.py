"""`[database] sqlite_synchronous` (issue #8.3): the setting reaches both SQLite connections.

WAL + NORMAL keeps every commit when the process dies but may lose the last ones on a power
loss; FULL syncs every commit. The pragma is per connection, so it is read back from the
store's own writer and reader, and from the store the app's lifespan opened.
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.config import ConfigError, load_settings
from proxy.store import open_store
from tests.store_backends import run_with_store

PRAGMA_VALUES = {"NORMAL": 1, "FULL": 2}


async def _pragmas(store) -> tuple[int, int]:
    def read(db):
        return db.execute("PRAGMA synchronous").fetchone()[0]

    return await store._write(read), await store._read(read)


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
def test_the_store_applies_the_mode_to_writer_and_reader(tmp_path, mode):
    store = open_store(f"sqlite:///{tmp_path}/s.db", sqlite_synchronous=mode)
    assert run_with_store(store, _pragmas) == (PRAGMA_VALUES[mode],) * 2


def test_the_default_is_normal(tmp_path):
    assert load_settings(environ={}).database.sqlite_synchronous == "NORMAL"
    assert run_with_store(open_store(f"sqlite:///{tmp_path}/d.db"), _pragmas) == (1, 1)


def test_the_file_and_the_environment_set_it(tmp_path):
    path = tmp_path / "memproxy.toml"
    path.write_text('[database]\nsqlite_synchronous = "full"\n')
    assert load_settings(path, environ={}).database.sqlite_synchronous == "FULL"
    env = {"MEMPROXY_DATABASE_SQLITE_SYNCHRONOUS": "normal"}
    assert load_settings(path, environ=env).database.sqlite_synchronous == "NORMAL"


@pytest.mark.parametrize("value", ["OFF", "EXTRA", "1", ""])
def test_other_values_are_a_config_error(tmp_path, value):
    path = tmp_path / "memproxy.toml"
    path.write_text(f'[database]\nsqlite_synchronous = "{value}"\n')
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        load_settings(path, environ={})


def test_the_store_refuses_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        run_with_store(open_store(f"sqlite:///{tmp_path}/x.db", sqlite_synchronous="OFF"),
                       _pragmas)


def test_the_app_opens_its_store_with_the_configured_mode(tmp_path):
    from proxy.app import create_app

    settings = load_settings(environ={}, overrides={
        "database": {"url": f"sqlite:///{tmp_path}/app.db", "sqlite_synchronous": "FULL"},
        "upstream": {"base_url": "http://127.0.0.1:9/v1"},
    })
    app = create_app(settings)

    async def main() -> tuple[int, int]:
        async with app.router.lifespan_context(app):
            return await _pragmas(app.state.memproxy.store)

    assert asyncio.run(main()) == (2, 2)
