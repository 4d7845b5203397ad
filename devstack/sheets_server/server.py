"""The HTTP server: routes, storage with all-or-nothing commits, the spreadsheet and values endpoints
(the Drive ones are in :mod:`.drive`)."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from devstack._http import ApiError, Fault, Reply, Request, Route, Setting, StandInServer, route, run_main
from devstack.sheets_server import batch
from devstack.sheets_server.batch.sheets import add_sheet
from devstack.sheets_server.cells import INPUT_OPTIONS, Cell, Skip, major_dimension, renderer, trim
from devstack.sheets_server.copy_sheet import copy_sheet
from devstack.sheets_server.drive import LOCAL_SHARED_DRIVE_FOLDER, DriveEndpoints
from devstack.sheets_server.dump import dump_command
from devstack.sheets_server.embedded import mark_stale, refresh_pivots, stale_sheets
from devstack.sheets_server.http_helpers import checked_body
from devstack.sheets_server.model import CELL_LIMIT, CellRange, Spreadsheet, parse_range
from devstack.sheets_server.persistence import load_spreadsheets, write_atomically
from devstack.sheets_server.quota import GOOGLE_QUOTA, QuotaMeter, quota_error, quota_setting, request_kind
from devstack.sheets_server.values import clear_values, value_range, write_values

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    429: (
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' "
        "of service 'sheets.googleapis.com' for consumer 'project_number:0'."
    ),
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}


def _caller(value: Any) -> str:
    if value not in ("service_account", "user"):
        raise ValueError("must be 'service_account' or 'user'")
    return str(value)


def _folder_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of folder ids")
    return list(value)


def _user(request: Request) -> str:
    """Who the per-user quota counts against: the caller's credentials (hashed: never shown)."""
    token = request.bearer_token()
    return hashlib.sha256(token.encode()).hexdigest()[:12] if token else "anonymous"


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


class SheetsServer(DriveEndpoints, StandInServer):
    __module__ = "devstack.sheets_server"  # its public home: the CLI's usage line names it
    service_name = "sheets"
    settings_spec: ClassVar[dict[str, Setting]] = {
        **StandInServer.settings_spec,
        "cell_limit": Setting(CELL_LIMIT, positive_int),
        # Who calls: a service account owns no My Drive storage, so it can only create files in a
        # shared drive; "user" stands for an OAuth user (the stand-in's own API tests).
        "caller": Setting("service_account", _caller),
        "shared_drive_folders": Setting([LOCAL_SHARED_DRIVE_FOLDER], _folder_ids),
        # Google's per-minute read/write quotas (see quota.py); null turns them off.
        "quota": Setting(dict(GOOGLE_QUOTA), quota_setting),
    }

    def load_state(self) -> None:
        # One writer at a time; readers need no lock because a write swaps in a new Spreadsheet.
        self._lock = threading.Lock()
        books = load_spreadsheets(self.data_dir) if self.data_dir is not None else []
        self._books: dict[str, Spreadsheet] = {book.spreadsheet_id: book for book in books}
        self._quota = QuotaMeter()

    def handle_api(self, request: Request) -> Reply:
        # Google's quota answers at the door, before anything (faults included) touches the request.
        kind = request_kind(request.method, unquote(request.path))
        refused = self._quota.admit(self.settings["quota"], kind, _user(request))
        if refused is not None:
            return Reply(refused.status, self.render_error(refused))
        return super().handle_api(request)

    def api_routes(self) -> list[Route]:
        sheets = r"/v4/spreadsheets"
        sid = r"([^/:]+)"
        return [
            route("POST", sheets, self._create),
            route("GET", rf"{sheets}/{sid}", self._get),
            route("POST", rf"{sheets}/{sid}:batchUpdate", self._batch_update),
            route("POST", rf"{sheets}/{sid}/sheets/([^/:]+):copyTo", self._copy_to),
            route("GET", rf"{sheets}/{sid}/values:batchGet", self._values_batch_get),
            route("POST", rf"{sheets}/{sid}/values:batchUpdate", self._values_batch_update),
            route("POST", rf"{sheets}/{sid}/values:batchClear", self._values_batch_clear),
            route("POST", rf"{sheets}/{sid}/values/([^/]+):append", self._values_append),
            route("POST", rf"{sheets}/{sid}/values/([^/]+):clear", self._values_clear),
            route("GET", rf"{sheets}/{sid}/values/([^/]+)", self._values_get),
            route("PUT", rf"{sheets}/{sid}/values/([^/]+)", self._values_update),
            route("POST", r"(?:/drive/v3)?/files", self._drive_create),
            route("POST", r"(?:/drive/v3)?/files/([^/]+)/permissions", self._create_permission),
            route("GET", r"(?:/drive/v3)?/files/([^/]+)/permissions", self._list_permissions),
        ]

    def extra_control_routes(self) -> list[Route]:
        return [
            route("GET", r"/_control/spreadsheets", self._control_list),
            route("GET", r"/_control/spreadsheets/([^/]+)", self._control_state),
            route("GET", r"/_control/quota", lambda _request: self._quota.state(self.settings["quota"])),
        ]

    def render_error(self, error: ApiError) -> Any:
        status = error.code if isinstance(error.code, str) else _GOOGLE_STATUS.get(error.status, "UNKNOWN")
        return {"error": {"code": error.status, "message": error.message, "status": status, **error.extra}}

    def fault_error(self, fault: Fault) -> ApiError:
        assert fault.status is not None
        if fault.status == 429 and fault.message is None:  # a quota burst on demand, Google's body
            return quota_error("write", True, GOOGLE_QUOTA["write_per_minute_per_user"])
        message = fault.message or _FAULT_MESSAGES.get(fault.status, f"Injected fault (HTTP {fault.status})")
        return ApiError(fault.status, message, fault.error_code if isinstance(fault.error_code, str) else None)

    def reset_state(self) -> None:
        with self._lock:
            if self.data_dir is not None:
                for spreadsheet_id in self._books:
                    self._path(spreadsheet_id).unlink(missing_ok=True)
            self._books = {}
        self._quota.reset()

    def seed(self, book: Spreadsheet) -> None:
        """Put a whole spreadsheet in place without the API (a benchmark's million rows through
        batchUpdate would take longer than what it measures). Google's cell limit still applies."""
        with self._lock:
            self._commit(book)

    def spreadsheet(self, spreadsheet_id: str) -> Spreadsheet:
        """The current state of a spreadsheet (for tests running the server in-process)."""
        return self._book(spreadsheet_id)

    # -- storage ---------------------------------------------------------------------------------

    def _path(self, spreadsheet_id: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"{spreadsheet_id}.json"

    def _book(self, spreadsheet_id: str) -> Spreadsheet:
        book = self._books.get(unquote(spreadsheet_id))
        if book is None:
            raise ApiError(404, "Requested entity was not found.")
        return book

    @contextmanager
    def _mutate(self, spreadsheet_id: str) -> Iterator[Spreadsheet]:
        """Edit a copy and swap it in only if the block succeeds: batch requests are all-or-nothing."""
        with self._lock:
            book = self._book(spreadsheet_id).clone()
            yield book
            self._commit(book)

    def _commit(self, book: Spreadsheet) -> None:
        mark_stale(book)  # pivot tables are redrawn by the next read that shows them (_fresh)
        limit = self.settings["cell_limit"]
        if book.cell_count() > limit:
            raise ApiError(
                400,
                f"This action would increase the number of cells in the workbook above the limit of {limit} cells.",
            )
        book.settle()
        self._books[book.spreadsheet_id] = book
        if self.data_dir is not None:
            write_atomically(self._path(book.spreadsheet_id), book.to_json_text())

    # -- spreadsheets ----------------------------------------------------------------------------

    def _create(self, request: Request) -> dict[str, Any]:
        body = checked_body(request, "sheets", "Spreadsheet")
        # spreadsheets.create puts the file in the caller's My Drive, which a service account lacks.
        self._check_my_drive_quota()
        properties = {
            "title": "Untitled spreadsheet",
            "locale": "en_US",
            "autoRecalc": "ON_CHANGE",
            "timeZone": "Etc/GMT",
            **(body.get("properties") or {}),
        }
        book = Spreadsheet(secrets.token_urlsafe(33), properties)
        for spec in body.get("sheets") or [{}]:
            add_sheet(book, {"properties": spec.get("properties") or {}})
        with self._lock:
            self._commit(book)
        return book.resource()

    def _fresh(self, spreadsheet_id: str, ranges: Sequence[str] = (), everything: bool = False) -> Spreadsheet:
        """The book for a read, its pivot tables redrawn first if the read shows stale ones."""
        book = self._book(spreadsheet_id)
        now = datetime.now(UTC)
        stale = stale_sheets(book, now)
        if not everything:
            read = set()
            for text in ranges:
                try:
                    read.add(parse_range(book, text).sheet.sheet_id)
                except ApiError:
                    continue  # the read itself answers for a bad range
            stale &= read
        if not stale:
            return book
        with self._lock:  # swap in a redrawn copy, never over a write that landed meanwhile
            book = self._book(spreadsheet_id).clone()
            refresh_pivots(book, now)
            book.settle()
            self._books[book.spreadsheet_id] = book
        return book

    def _get(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        grid = request.param("includeGridData") == "true"
        ranges_read = request.params("ranges") if grid else []
        book = self._fresh(spreadsheet_id, ranges_read, everything=grid and not ranges_read)
        ranges = [parse_range(book, text) for text in request.params("ranges")]
        return book.resource(ranges, include_grid_data=request.param("includeGridData") == "true")

    def _batch_update(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        body = checked_body(request, "sheets", "BatchUpdateSpreadsheetRequest")
        with self._mutate(spreadsheet_id) as book:
            replies = batch.apply_batch(book, body.get("requests"))
        response: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id, "replies": replies}
        if body.get("includeSpreadsheetInResponse"):
            response["updatedSpreadsheet"] = book.resource()
        return response

    def _copy_to(self, request: Request, spreadsheet_id: str, sheet_id: str) -> dict[str, Any]:
        body = checked_body(request, "sheets", "CopySheetToAnotherSpreadsheetRequest")
        try:
            source_id = int(sheet_id)
        except ValueError:
            raise ApiError(400, f"Invalid value at 'sheet_id' (TYPE_INT32), \"{sheet_id}\"") from None
        source = self._book(spreadsheet_id).sheet_by_id(source_id)
        destination = str(body.get("destinationSpreadsheetId") or "")
        if not destination:
            raise ApiError(400, "Invalid destinationSpreadsheetId: must be set")
        with self._mutate(destination) as book:
            return copy_sheet(source, book)

    # -- values ----------------------------------------------------------------------------------

    def _values_get(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        rng = parse_range(self._fresh(spreadsheet_id, [unquote(raw_range)]), unquote(raw_range))
        rng.check_in_grid()
        return value_range(rng, renderer(request), major_dimension(request.param("majorDimension")))

    def _values_batch_get(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        book = self._fresh(spreadsheet_id, request.params("ranges"))
        render, major = renderer(request), major_dimension(request.param("majorDimension"))
        value_ranges = []
        for text in request.params("ranges"):
            rng = parse_range(book, text)
            rng.check_in_grid()
            value_ranges.append(value_range(rng, render, major))
        return {"spreadsheetId": book.spreadsheet_id, "valueRanges": value_ranges}

    def _input_converter(self, option: str | None) -> Callable[[Any], Cell | Skip]:
        if option is None:
            raise ApiError(400, "'valueInputOption' is required but not specified")
        if option not in INPUT_OPTIONS:
            raise ApiError(400, f"Invalid valueInputOption: {option}")
        return INPUT_OPTIONS[option]

    def _update_one(
        self,
        book: Spreadsheet,
        rng: CellRange,
        value_range: dict[str, Any],
        convert: Callable[[Any], Cell | Skip],
        response_render: Callable[[Cell], Any] | None,
    ) -> dict[str, Any]:
        """Write one ValueRange; ``response_render`` set means includeValuesInResponse."""
        major = major_dimension(value_range.get("majorDimension"))
        result = {
            "spreadsheetId": book.spreadsheet_id,
            **write_values(rng, value_range.get("values") or [], major, convert),
        }
        if response_render is not None and "updatedRows" in result:
            written = parse_range(book, result["updatedRange"])
            result["updatedData"] = value_range(written, response_render, "ROWS")
        return result

    def _response_render(self, request: Request, include: Any) -> Callable[[Cell], Any] | None:
        return renderer(request, "responseValueRenderOption") if include in (True, "true") else None

    def _values_update(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        body = checked_body(request, "sheets", "ValueRange")
        convert = self._input_converter(request.param("valueInputOption"))
        render = self._response_render(request, request.param("includeValuesInResponse"))
        with self._mutate(spreadsheet_id) as book:
            return self._update_one(book, parse_range(book, unquote(raw_range)), body, convert, render)

    def _values_batch_update(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        body = checked_body(request, "sheets", "BatchUpdateValuesRequest")
        convert = self._input_converter(body.get("valueInputOption"))
        render = self._response_render(request, body.get("includeValuesInResponse"))
        responses = []
        with self._mutate(spreadsheet_id) as book:
            for value_range in body.get("data") or []:
                rng = parse_range(book, str(value_range.get("range", "")))
                responses.append(self._update_one(book, rng, value_range, convert, render))
        written = [r for r in responses if "updatedRows" in r]
        return {
            "spreadsheetId": book.spreadsheet_id,
            "totalUpdatedRows": sum(r["updatedRows"] for r in written),
            "totalUpdatedColumns": sum(r["updatedColumns"] for r in written),
            "totalUpdatedCells": sum(r["updatedCells"] for r in written),
            "totalUpdatedSheets": len({r["updatedRange"].rpartition("!")[0] for r in written}),
            "responses": responses,
        }

    def _values_append(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        body = checked_body(request, "sheets", "ValueRange")
        convert = self._input_converter(request.param("valueInputOption"))
        insert_rows = (request.param("insertDataOption") or "OVERWRITE") == "INSERT_ROWS"
        values = body.get("values") or []
        major = major_dimension(body.get("majorDimension"))
        with self._mutate(spreadsheet_id) as book:
            rng = parse_range(book, unquote(raw_range))
            if rng.is_single_cell():  # as for writes, a single cell only anchors the search
                rng = CellRange(rng.sheet, rng.start_row, None, rng.start_col, None)
            sheet = rng.sheet
            # The "table" is the data at or below the range's first row, within its columns;
            # new rows go right after its last non-empty row.
            last = rng.start_row - 1
            for r in range(rng.start_row, len(sheet.rows)):
                if any(v is not None for v in sheet.rows[r][rng.start_col : rng.end_col]):
                    last = r
            response: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
            if last >= rng.start_row:
                width = max(
                    len(trim(sheet.rows[r][rng.start_col : rng.end_col])) for r in range(rng.start_row, last + 1)
                )
                table = CellRange(sheet, rng.start_row, last + 1, rng.start_col, rng.start_col + max(width, 1))
                response["tableRange"] = table.a1()
            target = CellRange(sheet, last + 1, None, rng.start_col, None)
            height = len(values) if major == "ROWS" else max((len(col) for col in values), default=0)
            if insert_rows and height:
                # INSERT_ROWS pushes whatever lies below the table down instead of overwriting it.
                if last + 1 < len(sheet.rows):
                    sheet.rows[last + 1 : last + 1] = [[] for _ in range(height)]
                sheet.grid["rowCount"] = sheet.row_count + height
            response["updates"] = {
                "spreadsheetId": book.spreadsheet_id,
                **write_values(target, values, major, convert),
            }
        return response

    def _values_clear(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        with self._mutate(spreadsheet_id) as book:
            rng = parse_range(book, unquote(raw_range))
            clear_values(rng)
        return {"spreadsheetId": book.spreadsheet_id, "clearedRange": rng.a1()}

    def _values_batch_clear(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        texts = checked_body(request, "sheets", "BatchClearValuesRequest").get("ranges") or []
        with self._mutate(spreadsheet_id) as book:
            ranges = [parse_range(book, str(text)) for text in texts]
            for rng in ranges:
                clear_values(rng)
        return {"spreadsheetId": book.spreadsheet_id, "clearedRanges": [rng.a1() for rng in ranges]}

    # -- control extras ----------------------------------------------------------------------------

    def _control_list(self, _request: Request) -> list[dict[str, Any]]:
        return [
            {
                "spreadsheetId": b.spreadsheet_id,
                "title": b.properties.get("title"),
                "sheets": [s.title for s in b.sheets],
            }
            for b in list(self._books.values())
        ]

    def _control_state(self, _request: Request, spreadsheet_id: str) -> Reply:
        book = self._books.get(unquote(spreadsheet_id))
        if book is None:
            return Reply(404, {"ok": False, "error": f"no spreadsheet {spreadsheet_id}"})
        return Reply(200, self._fresh(spreadsheet_id, everything=True).to_json())


def main(argv: Sequence[str] | None = None) -> int:
    import devstack.sheets_server as package  # its docstring is the CLI's help; imported late (it imports us)

    return run_main(SheetsServer, argv, {"dump": dump_command}, description=package.__doc__)
