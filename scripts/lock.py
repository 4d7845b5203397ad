"""Regenerate the "leadflow additions" section at the end of constraints.txt.

    python scripts/lock.py            (make lock) rewrite the section, print what changed
    python scripts/lock.py --check    change nothing; exit 1 if the section is out of date

constraints.txt is the official Airflow 3.3.1 / Python 3.12 constraints file, kept verbatim, plus a
section after the ``# leadflow additions`` marker that pins everything requirements-dev.txt pulls
in (runtime extras, stand-ins, test tools) which the official part does not pin. This resolves
requirements-dev.txt against the official part only, with uv for the venv's interpreter::

    uv pip compile requirements-dev.txt -c <official part> --python .venv/bin/python

and writes back the resolved pins whose (PEP 503 normalised) name the official part does not
pin. Nothing above the marker's comment block is touched. Running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"
MARKER = "# leadflow additions"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mwaa_bundle import PIN, BundleError, constraints_sections  # noqa: E402 - one parser, shared with the bundle
from mwaa_bundle import read_pins_text as pins  # noqa: E402
from packaging.utils import canonicalize_name as canonical  # noqa: E402


def split(text: str) -> tuple[str, str, list[str]]:
    try:
        return constraints_sections(text)
    except BundleError as error:
        sys.exit(f"lock: {error}")


def uv_binary(python: Path) -> str:
    candidate = python.parent / "uv"
    if candidate.exists():
        return str(candidate)
    sys.exit(f"lock: uv not found next to {python}; run `make install`")


def compile_pins(requirements: Path, official: str, python: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="leadflow-lock-") as tmp:
        official_file = Path(tmp) / "official-constraints.txt"
        official_file.write_text(official)
        command = [
            uv_binary(python), "pip", "compile", str(requirements.name),
            "-c", str(official_file), "--python", str(python),
            "--no-header", "--no-annotate", "--quiet",
        ]  # fmt: skip
        result = subprocess.run(  # noqa: S603 - fixed command line, our own files
            command, cwd=requirements.parent, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        sys.exit(f"lock: uv pip compile failed:\n{result.stderr}")
    return [line.strip() for line in result.stdout.splitlines() if PIN.match(line)]


def additions_for(resolved: list[str], official: str) -> list[str]:
    official_pins = pins(official)
    lines = []
    for line in resolved:
        match = PIN.match(line)
        name, version = canonical(match[1]), match[3]
        if name in official_pins:
            if official_pins[name] != version:
                sys.exit(f"lock: {line} resolved against the official pin {name}=={official_pins[name]}?")
            continue
        lines.append(f"{name}=={version}")
    return sorted(lines, key=lambda line: canonical(line.split("==")[0]))


def summary(old: list[str], new: list[str]) -> list[str]:
    before, after = pins("\n".join(old)), pins("\n".join(new))
    changes = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            changes.append(f"  - {name}=={before[name]}")
        elif name not in before:
            changes.append(f"  + {name}=={after[name]}")
        elif before[name] != after[name]:
            changes.append(f"  ~ {name} {before[name]} -> {after[name]}")
    if [line.strip() for line in old] != new and not changes:
        changes.append("  (same pins; spelling or order of the lines differs)")
    return changes


def write_keeping_mode(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if the section would change")
    parser.add_argument("--constraints", type=Path, default=CONSTRAINTS)
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements-dev.txt")
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python")
    args = parser.parse_args(argv)

    text = args.constraints.read_text()
    official, header, old = split(text)
    new = additions_for(compile_pins(args.requirements.resolve(), official, args.python), official)
    updated = official + header + "".join(f"{line}\n" for line in new)
    changes = summary(old, new)
    name = args.constraints.name
    if updated == text:
        print(f"{name}: leadflow additions up to date ({len(new)} pins)")
        return 0
    print(f"{name}: leadflow additions {'would change' if args.check else 'updated'} ({len(old)} -> {len(new)} pins)")
    print("\n".join(changes))
    if args.check:
        return 1
    write_keeping_mode(args.constraints, updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
