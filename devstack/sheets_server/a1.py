"""A1 notation: column letters, quoted tab titles, and the cells part of a range."""

from __future__ import annotations

import re

from devstack._http import ApiError


def column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def column_index(letters: str) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number - 1


_REF = re.compile(r"\$?([A-Za-z]{1,3})?\$?([1-9]\d*)?")
_PLAIN_TITLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELL_LIKE = re.compile(r"[A-Za-z]{1,3}\d+")


def quote_title(title: str) -> str:
    if _PLAIN_TITLE.fullmatch(title) and not _CELL_LIKE.fullmatch(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def split_title(text: str) -> tuple[str | None, str | None]:
    """``'Tab name'!A1:B`` -> ("Tab name", "A1:B"); ``'Tab'`` -> ("Tab", None); ``A1`` -> (None, "A1")."""
    if text.startswith("'"):
        name: list[str] = []
        i = 1
        while i < len(text):
            if text[i] != "'":
                name.append(text[i])
                i += 1
            elif text[i + 1 : i + 2] == "'":  # '' is an escaped quote inside a quoted title
                name.append("'")
                i += 2
            else:
                rest = text[i + 1 :]
                if not rest:
                    return "".join(name), None
                if rest.startswith("!"):
                    return "".join(name), rest[1:]
                break
        raise ApiError(400, f"Unable to parse range: {text}")
    title, bang, cells = text.rpartition("!")
    return (title, cells) if bang else (None, text)


def parse_cells(text: str) -> tuple[int, int | None, int, int | None] | None:
    """A1 cells part -> (start_row, end_row, start_col, end_col), 0-based, ends exclusive, None = open."""
    parts = text.split(":")
    if len(parts) > 2:
        return None
    refs: list[tuple[int | None, int | None]] = []
    for part in parts:
        match = _REF.fullmatch(part)
        if not part or match is None or (match[1] is None and match[2] is None):
            return None
        refs.append((column_index(match[1]) if match[1] else None, int(match[2]) if match[2] else None))
    if len(refs) == 1:
        col, row = refs[0]
        return (
            row - 1 if row else 0,
            row,
            col if col is not None else 0,
            col + 1 if col is not None else None,
        )
    (col1, row1), (col2, row2) = refs
    start_row, end_row = (row1 - 1 if row1 else 0), row2
    start_col, end_col = (col1 if col1 is not None else 0), (col2 + 1 if col2 is not None else None)
    # Reversed corners (B2:A1) name the same rectangle, as in the UI.
    if end_row is not None and end_row <= start_row:
        start_row, end_row = end_row - 1, start_row + 1
    if end_col is not None and end_col <= start_col:
        start_col, end_col = end_col - 1, start_col + 1
    return start_row, end_row, start_col, end_col
