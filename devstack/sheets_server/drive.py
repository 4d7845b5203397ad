"""The Drive v3 endpoints the report client uses: create a spreadsheet file, share it, list its
permissions. As strict as Drive: a service account owns no My Drive storage (403
``storageQuotaExceeded``), a shared-drive file is invisible without ``supportsAllDrives=true``.
"""

from __future__ import annotations

import copy
import random
import secrets
from typing import Any
from urllib.parse import unquote

from devstack._http import ApiError, Request
from devstack.sheets_server.batch.sheets import add_sheet
from devstack.sheets_server.http_helpers import checked_body, file_not_found
from devstack.sheets_server.model import Spreadsheet

SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
LOCAL_SHARED_DRIVE_FOLDER = "local-shared-drive-folder"  # a folder on a shared drive the stand-in knows
# Google's answer to a service account creating a file outside a shared drive.
_NO_QUOTA_MESSAGE = (
    "Service Accounts do not have storage quota. Leverage shared drives "
    "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives), "
    "or use OAuth delegation (http://support.google.com/a/answer/7281227) instead."
)
_PERMISSION_ROLES = {"owner", "organizer", "fileOrganizer", "writer", "commenter", "reader"}
_PERMISSION_TYPES = {"user", "group", "domain", "anyone"}


class DriveEndpoints:
    """Mixed into the server: its books, lock, settings and commits are the server's own."""

    def _drive_file(self, file_id: str) -> str:
        file_id = unquote(file_id)
        if file_id not in self._books:
            raise file_not_found(file_id)
        return file_id

    def _check_my_drive_quota(self) -> None:
        if self.settings["caller"] == "service_account":
            errors = [{"message": _NO_QUOTA_MESSAGE, "domain": "usageLimits", "reason": "storageQuotaExceeded"}]
            raise ApiError(403, _NO_QUOTA_MESSAGE, extra={"errors": errors})

    def _shared_drive_file(self, request: Request, file_id: str) -> str:
        """A file on a shared drive is invisible to calls without supportsAllDrives=true."""
        file_id = self._drive_file(file_id)
        if self._books[file_id].parents and request.param("supportsAllDrives") != "true":
            raise file_not_found(file_id)  # Drive answers as if the file did not exist
        return file_id

    def _drive_create(self, request: Request) -> dict[str, Any]:
        body = checked_body(request, "drive", "File")
        mime = body.get("mimeType")
        if mime != SPREADSHEET_MIME:
            raise ApiError(400, f"The stand-in only creates Google Sheets files (mimeType {SPREADSHEET_MIME})")
        parents = body.get("parents") or []
        if not isinstance(parents, list) or len(parents) > 1:
            raise ApiError(400, "A file can have at most one parent.")
        if not parents:
            self._check_my_drive_quota()
        elif parents[0] not in self.settings["shared_drive_folders"] or request.param("supportsAllDrives") != "true":
            raise file_not_found(parents[0])
        properties = {"title": str(body.get("name") or "Untitled spreadsheet"), "locale": "en_US",
                      "autoRecalc": "ON_CHANGE", "timeZone": "Etc/GMT"}  # fmt: skip
        book = Spreadsheet(secrets.token_urlsafe(33), properties, parents=list(parents))
        add_sheet(book, {"properties": {}})
        with self._lock:
            self._commit(book)
        return {"kind": "drive#file", "id": book.spreadsheet_id, "name": properties["title"], "mimeType": mime}

    def _create_permission(self, request: Request, file_id: str) -> dict[str, Any]:
        body = checked_body(request, "drive", "Permission")
        role, kind = body.get("role"), body.get("type")
        if role not in _PERMISSION_ROLES:
            raise ApiError(400, f"The provided role is invalid: {role!r}")
        if kind not in _PERMISSION_TYPES:
            raise ApiError(400, f"The provided permission type is invalid: {kind!r}")
        if kind in ("user", "group") and not body.get("emailAddress"):
            raise ApiError(400, "The permission type 'user' or 'group' requires an emailAddress.")
        permission = {
            "kind": "drive#permission",
            "id": str(random.randint(10**19, 10**20 - 1)),
            "type": kind,
            "role": role,
            **{key: body[key] for key in ("emailAddress", "domain") if body.get(key)},
        }
        with self._mutate(self._shared_drive_file(request, file_id)) as book:
            book.permissions.append(permission)
        return permission

    def _list_permissions(self, request: Request, file_id: str) -> dict[str, Any]:
        book = self._book(self._shared_drive_file(request, file_id))
        return {"kind": "drive#permissionList", "permissions": copy.deepcopy(book.permissions)}
