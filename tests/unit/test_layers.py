"""The floors keep to themselves: no package takes another's private names.

``lint-imports`` (run by ``make test``) checks which package may import which;
this checks what they take: a name starting with ``_`` is private to its
package, so another package importing it is coupling to a detail.
"""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"


def top_package(module: str) -> str:
    return module.split(".", 1)[0]


def private_imports_across_packages(root: pathlib.Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        own = relative.parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if top_package(node.module) in (own, "twisted", "txamqp"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{relative}:{node.lineno}: {node.module}.{alias.name}")
    return found


def test_no_private_name_crosses_a_package():
    assert private_imports_across_packages() == []


def test_the_check_sees_a_private_import(tmp_path):
    pkg = tmp_path / "somepkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("from otherpkg.mod import _secret\n")
    assert private_imports_across_packages(tmp_path) == ["somepkg/m.py:1: otherpkg.mod._secret"]
