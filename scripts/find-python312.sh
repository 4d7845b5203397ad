#!/usr/bin/env sh
# Print the path of a Python 3.12 interpreter (what MWAA runs), or explain and fail.
# Order: $PYTHON, python3.12 on PATH, pyenv's versions, uv's managed Pythons.
is312() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }
for candidate in "${PYTHON:-}" "$(command -v python3.12 2>/dev/null)" \
    "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1)" \
    "$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1)" \
    "$(command -v uv >/dev/null 2>&1 && uv python find 3.12 2>/dev/null)"; do
  if is312 "$candidate"; then echo "$candidate"; exit 0; fi
done
echo "error: leadflow needs Python 3.12 (Airflow 3.3.1 on MWAA runs 3.12 and its constraints do not" >&2
echo "resolve on other versions). Install it (pyenv install 3.12, apt, python.org) or set PYTHON=/path/to/python3.12." >&2
exit 1
