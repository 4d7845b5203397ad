"""leadflow.messaging is what the follow-ups and the receipts share (queues, ledger, the WhatsApp
client and its templates): it imports neither, and neither imports the other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "include" / "leadflow"


def _imports(package: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (PACKAGE / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                found |= {(path.name, alias.name) for alias in node.names}
    return found


def test_messaging_imports_neither_package_and_neither_package_imports_the_other() -> None:
    def into(package: str, targets: tuple[str, ...]) -> list[tuple[str, str]]:
        return sorted((f, m) for f, m in _imports(package) if m.startswith(targets))

    assert into("messaging", ("leadflow.followups", "leadflow.statuses")) == []
    assert into("followups", ("leadflow.statuses",)) == []
    assert into("statuses", ("leadflow.followups",)) == []
