"""Build the Amazon MWAA (Airflow 3.3.1) deployment bundle: what goes to the environment's S3 bucket.

    python scripts/mwaa_bundle.py --out dist/mwaa        (make mwaa-bundle)

Layout of ``--out``::

    dags/                    -> s3://<mwaa-bucket>/dags/
      interaction_reports.py, whatsapp_followups.py   the DAG files (dags/ of the repo)
      leadflow/              the logic package (include/leadflow), importable because MWAA puts
                             the dags folder on PYTHONPATH; .airflowignore keeps the DAG
                             processor from parsing it
      .airflowignore         glob syntax, the Airflow 3 default ([core] dag_ignore_file_syntax)
      constraints.txt        official Airflow 3.3.1 constraints + leadflow's *runtime* additions
    requirements.txt         -> s3://<mwaa-bucket>/requirements.txt; first line points pip at
                             the constraints above; lists only what MWAA does not preinstall
    plugins.zip              plugins/ (the Leadflow UI plugin: leadflow_plugin.py, leadflow_ui/ and
                             the .airflowignore that keeps Airflow from importing leadflow_ui/*.py
                             as plugins) and, with --slim-google or --offline, the wheels
                             requirements.txt installs (scripts/mwaa_wheels.py)
    README.txt               the upload commands

No startup.sh: every dependency is a wheel pip installs from requirements.txt, nothing needs an OS
package or an environment variable, and the dags folder is already on PYTHONPATH on MWAA.

The build fails (exit 1, message on stderr) rather than produce a bundle MWAA would reject or run
differently: a pin that disagrees with constraints.txt, a package MWAA pins at another version, a
runtime dependency without a pin, or bundled code importing the dev-only ``devstack``/``tests``.
Only the standard library and ``packaging`` are used; dependency metadata comes from the
installed environment (``make install``), so the build needs no network.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
MWAA_REFERENCE = REPO / "deploy" / "mwaa-3.3.1"
MWAA_DAGS_DIR = "/usr/local/airflow/dags"
CONSTRAINT_LINE = f'--constraint "{MWAA_DAGS_DIR}/constraints.txt"'
ADDITIONS_MARKER = "# leadflow additions"
LOGIC_PACKAGE = "leadflow"
DEV_ONLY_PACKAGES = ("devstack", "tests", "bench")
PLUGIN_PLACEHOLDERS = {".gitkeep", "README", "README.md", "README.txt"}
SKIP_NAMES = {"__pycache__", ".pytest_cache", ".ruff_cache", ".DS_Store"}
SKIP_SUFFIXES = {".pyc", ".pyo"}

AIRFLOWIGNORE = f"""\
# Read with [core] dag_ignore_file_syntax = glob, the Airflow 3 default: gitignore-style patterns
# relative to this folder (there is no "# syntax:" header line in Airflow 3).
# The logic package is imported by the DAG files; the DAG processor must not parse it as DAGs.
{LOGIC_PACKAGE}/
{LOGIC_PACKAGE}/**
constraints.txt
__pycache__/
"""

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


class BundleError(Exception):
    """The bundle would be wrong; the message says why."""


def read_pins_text(text: str) -> dict[str, str]:
    """``name==version`` lines of requirements/constraints text, by canonical name."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match and not line.lstrip().startswith("#"):
            pins[canonicalize_name(match[1])] = match[3]
    return pins


def read_pins(path: Path) -> dict[str, str]:
    return read_pins_text(path.read_text())


def constraints_sections(text: str) -> tuple[str, str, list[str]]:
    """(official part, the additions' header comment, the additions' pin lines) of constraints.txt."""
    lines = text.splitlines(keepends=True)
    try:
        marker = next(i for i, line in enumerate(lines) if line.startswith(ADDITIONS_MARKER))
    except StopIteration:
        raise BundleError(f"constraints.txt has no {ADDITIONS_MARKER!r} section") from None
    start = marker
    while start > 0 and lines[start - 1].startswith("# ---"):
        start -= 1
    end = marker
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    additions = [line.strip() for line in lines[end:] if line.strip() and not line.lstrip().startswith("#")]
    return "".join(lines[:start]), "".join(lines[start:end]), additions


def split_constraints(text: str) -> tuple[str, list[str]]:
    """(official part, the pin lines of the leadflow additions section) of constraints.txt."""
    official, _header, additions = constraints_sections(text)
    return official, additions


def requirement_lines(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, without options (-r, -c) or comments."""
    requirements = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as error:
            raise BundleError(f"{path.name}: cannot parse {line!r}: {error}") from None
    return requirements


# ---------------------------------------------------------------------------------------------
# Dependency closure from the installed distributions' metadata


def _installed() -> dict[str, metadata.Distribution]:
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def _wanted(requirement: Requirement, extras: Iterable[str]) -> bool:
    marker: Marker | None = requirement.marker
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in {"", *extras})


def extra_requirements(dist: metadata.Distribution, extra: str) -> list[Requirement]:
    """What ``dist[extra]`` adds (requirements whose marker needs that extra)."""
    added = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            continue
        if requirement.marker.evaluate({"extra": extra}) and not requirement.marker.evaluate({"extra": ""}):
            added.append(requirement)
    return added


def runtime_closure(roots: list[Requirement], installed: dict[str, metadata.Distribution]) -> set[str]:
    """Canonical names of every distribution the roots need (with their extras), transitively."""
    seen: dict[str, set[str]] = {}
    pending = [(canonicalize_name(r.name), set(r.extras)) for r in roots if _wanted(r, ())]
    while pending:
        name, extras = pending.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        dist = installed.get(name)
        if dist is None:
            raise BundleError(f"{name} is a runtime dependency but is not installed here: run `make install`")
        for line in dist.requires or []:
            requirement = Requirement(line)
            if _wanted(requirement, seen[name]):
                pending.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return set(seen)


# ---------------------------------------------------------------------------------------------
# Pieces of the bundle


@dataclass
class Plan:
    requirements: list[str]  # "name==version", in requirements.txt order
    constraints_text: str
    kept_additions: list[str]
    stripped_additions: list[str]


def plan_dependencies(repo: Path, reference: Path) -> Plan:
    constraints_file = repo / "constraints.txt"
    official_text, additions = split_constraints(constraints_file.read_text())
    constraints = read_pins(constraints_file)
    preinstalled = read_pins(reference / "preinstalled-python-packages.txt")
    essential = read_pins(reference / "mwaa-essential-constraints.txt")
    roots = requirement_lines(repo / "requirements.txt")
    installed = _installed()
    closure = runtime_closure(roots, installed)

    problems: list[str] = []
    for requirement in roots:
        name = canonicalize_name(requirement.name)
        pinned = [s.version for s in requirement.specifier if s.operator == "=="]
        if pinned and constraints.get(name) != pinned[0]:
            problems.append(
                f"requirements.txt pins {name}=={pinned[0]} but constraints.txt has {constraints.get(name)}"
            )

    # Keep the additions the runtime needs, minus any the official part already pins under
    # another spelling of the name (e.g. ruamel-yaml / ruamel.yaml).
    official = read_pins_text(official_text)
    kept = [
        line
        for line in additions
        if (name := canonicalize_name(PIN.match(line)[1])) in closure and name not in official
    ]
    stripped = [line for line in additions if canonicalize_name(PIN.match(line)[1]) not in closure]
    bundled = official | {canonicalize_name(PIN.match(line)[1]): PIN.match(line)[3] for line in kept}

    for name in sorted(closure):
        if name in preinstalled:
            if name in bundled and bundled[name] != preinstalled[name]:
                problems.append(
                    f"{name}: MWAA preinstalls {preinstalled[name]} but the constraints pin {bundled[name]}"
                )
        elif name not in bundled:
            problems.append(
                f"{name} is needed at runtime, is not preinstalled on MWAA and has no pin in constraints.txt"
            )
    for name, version in essential.items():
        if name in bundled and bundled[name] != version:
            problems.append(f"{name}: MWAA's essential constraint is {version}, the bundle pins {bundled[name]}")

    # Top-level runtime requirements (and what their extras add) that MWAA does not ship.
    wanted: list[str] = []
    for requirement in roots:
        name = canonicalize_name(requirement.name)
        names = [name]
        for extra in sorted(requirement.extras):
            names += [canonicalize_name(r.name) for r in extra_requirements(installed[name], extra)]
        for candidate in names:
            if candidate not in preinstalled and candidate not in wanted:
                wanted.append(candidate)
    lines = []
    for name in wanted:
        if name not in bundled:
            problems.append(f"{name} has no pin in the bundled constraints")
            continue
        if name in essential and essential[name] != bundled[name]:
            problems.append(f"{name} would override MWAA's essential pin {essential[name]}")
        lines.append(f"{name}=={bundled[name]}")
    if problems:
        raise BundleError("\n".join(problems))

    header = (
        "# ---------------------------------------------------------------------------\n"
        f"{ADDITIONS_MARKER} (runtime only): pins the official constraints above lack, for what the\n"
        "# DAGs need on MWAA. Generated by scripts/mwaa_bundle.py from the repository's constraints.txt;\n"
        "# its dev/test-only additions (stand-ins, test tools) are left out.\n"
    )
    text = official_text.rstrip("\n") + "\n\n" + header + "".join(f"{line}\n" for line in kept)
    return Plan(requirements=lines, constraints_text=text, kept_additions=kept, stripped_additions=stripped)


def _ignored(path: Path) -> bool:
    return path.name in SKIP_NAMES or path.suffix in SKIP_SUFFIXES


def copy_tree(source: Path, target: Path) -> list[Path]:
    copied = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(_ignored(Path(part)) for part in relative.parts) or not path.is_file():
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        copied.append(destination)
    return copied


def forbidden_imports(files: Iterable[Path]) -> list[str]:
    """``file: module`` for every import of a dev-only package in the bundled Python files."""
    found = []
    for path in files:
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                if module.split(".")[0] in DEV_ONLY_PACKAGES:
                    found.append(f"{path}: imports {module}")
    return found


def real_plugins(plugins: Path) -> list[Path]:
    if not plugins.is_dir():
        return []
    return [
        p
        for p in sorted(plugins.rglob("*"))
        if p.is_file()
        and p.name not in PLUGIN_PLACEHOLDERS
        and not any(_ignored(Path(part)) for part in p.relative_to(plugins).parts)
    ]


def _shown(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return str(path)


def readme(out: Path, has_plugins: bool, plan: Plan) -> str:
    plugins_steps = (
        '  aws s3 cp plugins.zip "s3://$MWAA_BUCKET/plugins.zip"\n'
        '  PLUGINS_VERSION=$(aws s3api head-object --bucket "$MWAA_BUCKET" --key plugins.zip'
        " --query VersionId --output text)\n"
        if has_plugins
        else "  (no plugins.zip: plugins/ holds no plugins)\n"
    )
    plugins_flag = (
        ' \\\n      --plugins-s3-path plugins.zip --plugins-s3-object-version "$PLUGINS_VERSION"' if has_plugins else ""
    )
    plugins_note = (
        "Plugin changes need the plugins.zip upload and the update-environment call (the web server\n"
        "restarts). Then: Airflow UI > Leadflow in the nav, and a Summary tab on every run.\n"
        if has_plugins
        else ""
    )
    stripped = ", ".join(PIN.match(line)[1] for line in plan.stripped_additions) or "none"
    return f"""\
leadflow: Amazon MWAA (Airflow 3.3.1, Python 3.12) bundle, built by `make mwaa-bundle`.

Contents
  dags/                 the DAG files, the logic package dags/leadflow/, .airflowignore and
                        constraints.txt (official Airflow 3.3.1 constraints + runtime additions)
  requirements.txt      {len(plan.requirements)} packages MWAA 3.3.1 does not preinstall, pinned as in constraints.txt;
                        its first line makes pip use dags/constraints.txt on the workers
  no startup.sh         nothing needs an OS package or an environment variable
  dev-only additions left out of the bundled constraints: {stripped}

Upload (the bucket must have versioning enabled, as MWAA requires). Sync dags/ first: pip reads
{MWAA_DAGS_DIR}/constraints.txt when MWAA installs requirements.txt.

  cd {_shown(out)}
  MWAA_BUCKET=<bucket>  MWAA_ENV=<environment name>
  aws s3 sync dags "s3://$MWAA_BUCKET/dags" --delete --exclude "*.pyc" --exclude "*__pycache__*"
  aws s3 cp requirements.txt "s3://$MWAA_BUCKET/requirements.txt"
{plugins_steps}
Then point the environment at the new requirements.txt version (this restarts its components):

  REQUIREMENTS_VERSION=$(aws s3api head-object --bucket "$MWAA_BUCKET" --key requirements.txt \\
      --query VersionId --output text)
  aws mwaa update-environment --name "$MWAA_ENV" \\
      --requirements-s3-path requirements.txt --requirements-s3-object-version "$REQUIREMENTS_VERSION"{plugins_flag}

DAG-only changes need just the `aws s3 sync` line; MWAA picks them up without an update.
{plugins_note}
See docs/mwaa.md ("Deploy to MWAA") for the connections, Variables, Secrets Manager, SQS and IAM set-up.
"""


def build(
    out: Path, repo: Path = REPO, reference: Path = MWAA_REFERENCE, *, slim_google: bool = False, offline: bool = False
) -> Plan:
    out = out.resolve()
    if out == repo.resolve() or (out / ".git").exists() or repo.resolve().is_relative_to(out):
        raise BundleError(f"refusing to use {out} as the output folder (it would delete the repository)")
    plan = plan_dependencies(repo, reference)

    if out.exists():
        shutil.rmtree(out)
    dags = out / "dags"
    dags.mkdir(parents=True)
    if (repo / "dags" / LOGIC_PACKAGE).exists():
        raise BundleError(f"dags/{LOGIC_PACKAGE} exists in the repository and would clash with the logic package")
    copied = copy_tree(repo / "dags", dags)
    copied += copy_tree(repo / "include" / LOGIC_PACKAGE, dags / LOGIC_PACKAGE)
    if not (dags / LOGIC_PACKAGE / "__init__.py").is_file():
        raise BundleError(f"include/{LOGIC_PACKAGE}/__init__.py is missing")
    if problems := forbidden_imports(copied):
        raise BundleError("bundled code imports dev-only packages:\n" + "\n".join(problems))

    (dags / ".airflowignore").write_text(AIRFLOWIGNORE)
    (dags / "constraints.txt").write_text(plan.constraints_text)
    options = [CONSTRAINT_LINE]
    wheels: list[Path] = []
    if slim_google or offline:
        from mwaa_wheels import wheel_options

        options, plan.requirements, wheels = wheel_options(out, plan.requirements, reference, slim_google, offline)
    (out / "requirements.txt").write_text("\n".join([*options, *plan.requirements]) + "\n")

    plugins = real_plugins(repo / "plugins")
    if plugins or wheels:
        # Wheels at the top level: MWAA unzips plugins.zip into /usr/local/airflow/plugins.
        with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for path in plugins:
                archive.write(path, path.relative_to(repo / "plugins").as_posix())
            for wheel in wheels:
                archive.write(wheel, wheel.name)
    (out / "README.txt").write_text(readme(out, bool(plugins or wheels), plan))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "mwaa", help="output folder (recreated)")
    parser.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)
    parser.add_argument("--mwaa-reference", type=Path, default=MWAA_REFERENCE, help="the MWAA image's package lists")
    parser.add_argument(
        "--slim-google", action="store_true", help="the google provider with only the dependencies leadflow uses"
    )
    parser.add_argument("--offline", action="store_true", help="every added wheel in plugins.zip, no index")
    args = parser.parse_args(argv)
    try:
        plan = build(
            args.out, args.repo.resolve(), args.mwaa_reference, slim_google=args.slim_google, offline=args.offline
        )
    except BundleError as error:
        print(f"mwaa-bundle: {error}", file=sys.stderr)
        return 1
    out = args.out.resolve()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    print(f"built {out} ({len(files)} files)")
    print(f"  requirements.txt: {', '.join(plan.requirements)}")
    print(f"  bundled constraints: runtime additions kept: {', '.join(plan.kept_additions) or 'none'}")
    print(f"  left out (dev/test only): {', '.join(plan.stripped_additions) or 'none'}")
    print(f"  upload: see {out / 'README.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
