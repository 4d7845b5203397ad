"""One JSON file per spreadsheet in the data directory, written atomically."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from devstack.sheets_server.model import Spreadsheet


def load_spreadsheets(data_dir: Path) -> list[Spreadsheet]:
    books = []
    for path in sorted(data_dir.glob("*.json")):
        try:
            books.append(Spreadsheet.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"sheets stand-in: skipping {path}: {exc!r}", file=sys.stderr)
    return books


def write_atomically(path: Path, payload: dict[str, Any] | str) -> None:
    """``payload``: the JSON object, or its text already encoded (``Spreadsheet.to_json_text``)."""
    # Another process (the dump CLI, a test) may read the file at any moment: never let it see half.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users' tools
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if isinstance(payload, str):
                handle.write(payload)
            else:
                json.dump(payload, handle, ensure_ascii=False, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
