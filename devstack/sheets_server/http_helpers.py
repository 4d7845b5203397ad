"""What the Sheets and the Drive endpoints share: request bodies checked against the discovery
documents, and Drive's "file not found" body."""

from __future__ import annotations

from typing import Any

from devstack._http import ApiError, Request
from devstack.sheets_server.discovery import validate


def checked_body(request: Request, api: str, schema: str) -> dict[str, Any]:
    """The request's JSON body, refused as Google would if it does not fit the discovery schema."""
    body = request.json_object()
    validate(api, schema, body)
    return body


def file_not_found(file_id: str) -> ApiError:
    message = f"File not found: {file_id}."
    error = {"message": message, "domain": "global", "reason": "notFound"}
    errors = [{**error, "location": "fileId", "locationType": "parameter"}]
    return ApiError(404, message, extra={"errors": errors})
