"""Google Sheets API v4 (+ Drive v3 permissions) stand-in, reached through googleapiclient.

Build the clients with ``client_options={"api_endpoint": "http://127.0.0.1:PORT/"}`` and
``AnonymousCredentials()``. googleapiclient then calls (paths still percent-encoded)::

    POST /v4/spreadsheets                                   spreadsheets.create
    GET  /v4/spreadsheets/{id}?ranges=..&includeGridData=.. spreadsheets.get
    POST /v4/spreadsheets/{id}:batchUpdate                  spreadsheets.batchUpdate
    GET  /v4/spreadsheets/{id}/values/{range}               values.get
    PUT  /v4/spreadsheets/{id}/values/{range}               values.update
    POST /v4/spreadsheets/{id}/values/{range}:append        values.append
    POST /v4/spreadsheets/{id}/values/{range}:clear         values.clear
    GET  /v4/spreadsheets/{id}/values:batchGet?ranges=..    values.batchGet
    POST /v4/spreadsheets/{id}/values:batchUpdate           values.batchUpdate
    POST /v4/spreadsheets/{id}/values:batchClear            values.batchClear
    POST /files/{id}/permissions                            drive permissions.create

Drive's discovery document puts "drive/v3/" in its service path, which an api_endpoint override
replaces, so the Drive calls arrive without it; ``/drive/v3/files/...`` is accepted as well.

Every spreadsheet is stored as ``<spreadsheetId>.json`` in ``--data-dir`` (written atomically) and
loaded again on start. Formulas are stored, never evaluated: reads return the formula text.

Layout: ``a1`` (A1 notation), ``cells`` (values in, rendering out), ``model`` (spreadsheets,
sheets, ranges), ``values`` (values matrices), ``fieldmask``, ``batch`` (batchUpdate request kinds,
one registry; add a kind as a new module in ``batch/``), ``persistence``, ``server``, ``dump``.
It imports nothing from ``include/leadflow``: it is a check on our client, not a copy of it.

    python -m devstack.sheets_server --port 8091 --data-dir .local/sheets
    python -m devstack.sheets_server dump --data-dir .local/sheets [--format table|csv] [--out DIR]
"""

from devstack.sheets_server.batch import BATCH_REQUESTS, batch_request
from devstack.sheets_server.cells import Cell, Formula
from devstack.sheets_server.dump import dump_command
from devstack.sheets_server.fieldmask import parse_field_mask
from devstack.sheets_server.model import CellRange, Sheet, Spreadsheet, parse_range
from devstack.sheets_server.persistence import load_spreadsheets
from devstack.sheets_server.server import SheetsServer, main

__all__ = [
    "BATCH_REQUESTS",
    "Cell",
    "CellRange",
    "Formula",
    "Sheet",
    "SheetsServer",
    "Spreadsheet",
    "batch_request",
    "dump_command",
    "load_spreadsheets",
    "main",
    "parse_field_mask",
    "parse_range",
]
