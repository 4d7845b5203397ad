"""The report run's last task: its summary, then the run folder dropped.

Kept apart from :mod:`.pipeline` so that the task imports neither pandas nor the Mongo and
Sheets clients: on a busy worker those imports take seconds, and this task needs none of them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from leadflow.objectstore import remove_folder
from leadflow.timefmt import ist_fields

log = logging.getLogger(__name__)


def finish_step(extracted: dict[str, Any] | None, results: dict[str, Any]) -> dict[str, Any]:
    """The run summary (shown as the task's return value in the UI); then drop the run folder."""
    summary = {
        # For people: IST (what XCom keeps, and the steps compare, stays UTC ISO).
        "window": ist_fields((extracted or {}).get("window"), "start", "end", "interval_start"),
        "touched_sessions": (extracted or {}).get("touched_sessions", 0),
        "touched_users": (extracted or {}).get("touched_users", 0),
        **{name: value for name, value in results.items() if value is not None},
    }
    log.info("Run summary: %s", json.dumps(summary, default=str))
    if extracted:
        remove_folder(extracted["folder"])
    return summary
