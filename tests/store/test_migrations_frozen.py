"""Shipped migrations never change.

A database that applied migration N once never applies it again, so editing N's SQL would give
new databases a schema that old ones do not have, silently. These tests pin the statements of
every shipped migration, per dialect, by their sha256. If one fails, do not update its hash:
put the change back and add a new migration (proxy/store/migrations/__init__.py) instead. Only
a new migration adds a line here.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

from proxy.store import migrations
from proxy.store.migrations import MIGRATIONS

# version -> (name, sha256 of the SQLite statements, sha256 of the Postgres statements)
SHIPPED: dict[int, tuple[str, str, str]] = {
    1: ("initial schema",
        "bea59e09e88e5a7139534457b9a6a129364f0e90d5821deabebcb727db4207c0",
        "d420f924804873cca7c1055b1e3ddc82e4517b623c56f4ac5e2bf255cd47ef65"),
    2: ("conversation heads",
        "404d932fba36b94b8e86609a20ce3f8547e6a2bb77422a6a38071e24ebc4ae3a",
        "07ff9281a9433949019809de2d806e333daa9b40d0bc94f432f00d91ddb77f90"),
    3: ("block revisions",
        "487824a84fa176c2195eae47cb47ffdfc85281a8f8817a4213a3888dd5365bf1",
        "a4ec41631d985ffe5df9b2b109fd66c87b5daf33dabf45aae68038616ffb67b4"),
    4: ("embedding vectors",
        "66934aca0ebe1635b64697cb77d6fb6eacf278593572917adb38ed03b0b89cf1",
        "acc65b6efea753591e309ce818bf61c57a2965a71b9bb0d68830508449536a6b"),
    5: ("turn state in constant time",
        "f4cdd0e3f31848f2229e4207ce6b01e89a18e1f3c73d1a9d30c25bd76bc53a01",
        "9b5bc0ea195ab55ef178e915e73d013580f666057aea5f703144e655d25f8125"),
    6: ("conversation trees",
        "4b0805ec8ba5df6b5d9473b28e79405b9b338e05b67e3a6f1af2cfdb3e61a459",
        "88736992c359045e553cb879e90f247007c1090d29dc813ff5233491085858c9"),
    7: ("api key admin flag",
        "f8aa768bfb1aac942f7790465c99311d5474afdd6cd083707b4d0abf19ae36c7",
        "2fb15342dca81450c7c288ad07641de0960b147066e54664b9aab2e9a38346b7"),
    8: ("responses and api conversations",
        "1568142d49e807a67c97c705c98cfe530786a6f041aa8594af90f0b27629355c",
        "6aa8c49cc6f230d9a4e2f71ba4ce75d23159693e03bfbed25a0be3a2644267cd"),
    9: ("message names searchable",
        "2845ce38eedd0ae6a157477cc1987ca58c9e957e0d909a03c1670325980471ed",
        "e26c026d10c305ee0e8fc1ce438be941c98f03b9b563d6cb26746a82e15c3731"),
    10: ("background summary jobs",
         "fb9a6ecb81635223f197cd5886ee1acf03787d1e2dce29fb751cc2fc8951ab52",
         "76f5d8e8ee9dc52ba6086994bf3f976e4736dda2db19c03ca11b4a291a97fcbf"),
    11: ("forgetting",
         "f7b509ac1ca5eac84e8f831e35caf7d9c81098ff40b0bef17112965605b03388",
         "888773fb6db5b3887356376c799ef52c860aae72b74fcc1973a7bd80d1203eb0"),
    12: ("lease releases counted",
         "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
         "2cf14449a9daccee56c802612309eb1863af21754541935838690840a40b3e94"),
    13: ("message tsvector by trigger",
         "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
         "2b1e36ec874460c59b270271277661997184e1343ed78d97bd05f082f92f25a1"),
    14: ("context leavers counted",
         "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
         "38fbfc11e1450906ff579315c96571e9ec9bbf500ce9f68bc3f276a450a1ddb1"),
    15: ("message terms after the turn",
         "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
         "ab65ab1aebdeef216e42e0061123c1cbebaa7f2eb2c3b968412932baedee2bda"),
}


def statements_sha256(statements: list[str] | tuple[str, ...]) -> str:
    """The hash of a migration's statements in order (JSON keeps their boundaries)."""
    return hashlib.sha256(json.dumps(list(statements)).encode()).hexdigest()


@pytest.mark.parametrize("version", sorted(SHIPPED))
def test_shipped_migration_is_unchanged(version: int) -> None:
    name, sqlite_sha, postgres_sha = SHIPPED[version]
    migration = next((m for m in MIGRATIONS if m.version == version), None)
    assert migration is not None, f"shipped migration {version} ({name}) was removed"
    message = (f"migration {version} ({name}) has shipped and must never change: "
               "revert the edit and add a new migration instead")
    assert migration.name == name, message
    assert statements_sha256(migration.statements("sqlite")) == sqlite_sha, message
    assert statements_sha256(migration.statements("postgres")) == postgres_sha, message


def test_migration_modules_import_nothing() -> None:
    """A migration's SQL cannot come from a module that goes on changing (a runtime module's
    DDL, a shared constant): each `v<N>_*.py` imports nothing but `__future__`."""
    folder = Path(migrations.__file__).parent
    modules = sorted(folder.glob("v*_*.py"))
    assert len(modules) == len(MIGRATIONS)
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                pytest.fail(f"{module.name} imports {[a.name for a in node.names]}")
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                pytest.fail(f"{module.name} imports from {node.module or '.'}")
