"""`proxy/responses/` is pure like `core/`: it imports the standard library, `errors.py`,
`fastjson.py`, `core/`, `tokens/` and itself — never the store, the upstream, the HTTP layer or
the turn machinery (docs/architecture.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "proxy" / "responses"
ALLOWED = ("proxy.errors", "proxy.fastjson", "proxy.core", "proxy.tokens", "proxy.responses")


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.append(node.module or "")
            elif node.level == 1:
                names.append(f"proxy.responses.{node.module}" if node.module else "proxy.responses")
            else:
                names.append(f"proxy.{node.module}")
    return names


def test_the_package_imports_only_pure_modules():
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 6
    for path in modules:
        for name in imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__" or name.startswith(
                ALLOWED), f"{path.name} imports {name}"
