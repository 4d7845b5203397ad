"""spreadsheets.sheets.copyTo: one tab copied into another spreadsheet, as Google does it.

Google names the copy "Copy of <title>" and puts it last; copying again while that name is taken
gives "Copy of <title> 2", "... 3" (so a client that retries a copy whose answer it lost finds
two copies). The copy carries the cells, their formats, column/row sizes, the grid size and the
frozen rows. Conditional formats come along; the basic filter, protected ranges and embedded
charts/pivots do not (a client must set those again on the copy), the stricter reading of what
Google documents, so a client that relies on them being copied fails here first.
"""

from __future__ import annotations

import copy
from typing import Any

from devstack.sheets_server.model import Sheet, Spreadsheet


def copy_title(destination: Spreadsheet, title: str) -> str:
    name = f"Copy of {title}"
    number = 2
    while destination.sheet_by_title(name):
        name = f"Copy of {title} {number}"
        number += 1
    return name


def copy_sheet(source: Sheet, destination: Spreadsheet) -> dict[str, Any]:
    """Append a copy of ``source`` to ``destination`` (a copy the caller commits); its properties."""
    copied = source.clone()
    properties = copy.deepcopy(source.properties)
    properties.update(
        sheetId=destination.new_sheet_id(), title=copy_title(destination, source.title), index=len(destination.sheets)
    )
    copied.properties = properties
    copied.basic_filter = None
    copied.protected_ranges = []
    copied.embedded = {k: v for k, v in copied.embedded.items() if k == "conditionalFormats"}
    destination.sheets.append(copied)
    destination.reindex()
    return copy.deepcopy(copied.properties)
