"""The MWAA bundle (scripts/mwaa_bundle.py): built for real, then loaded the way MWAA loads it.

The DagBag check runs in a child interpreter with a clean environment in which only the bundle's
dags/ folder provides ``leadflow`` (the venv's leadflow-dev.pth, which adds the repository's
include/ and root, is neutralised), so a DAG that only works thanks to the repository layout, or
bundled code that imports the dev-only devstack, fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import EXPECTED_DAG_IDS, REPO

MWAA_REFERENCE = REPO / "deploy" / "mwaa-3.3.1"
SHARED_REFERENCE = REPO.parent / "shared" / "mwaa-3.3.1"
CONSTRAINT_LINE = '--constraint "/usr/local/airflow/dags/constraints.txt"'
DEV_ONLY_NAMES = ("secantus", "moto", "pytest", "ruff")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)$")
# The builder is a dev tool: it reads the dev venv's installed metadata (`make mwaa-bundle` runs
# it from .venv). `make mwaa-check` runs this suite inside the MWAA-like venv, which holds the
# image's packages, not the dev set, so it names the dev venv's interpreter here.
BUILDER_PYTHON = os.environ.get("LEADFLOW_BUNDLE_BUILDER_PYTHON", sys.executable)


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = PIN.match(line.split(" #")[0].strip())
        if match:
            found[canonicalize_name(match[1])] = match[3]
    return found


def official_part(text: str) -> str:
    return text[: text.index("# leadflow additions")].rstrip("-#\n ")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mwaa") / "bundle"
    result = subprocess.run(  # the venv's interpreter, as `make mwaa-bundle` runs it
        [BUILDER_PYTHON, str(REPO / "scripts" / "mwaa_bundle.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    return pins((REPO / "constraints.txt").read_text())


@pytest.fixture(scope="module")
def preinstalled() -> dict[str, str]:
    return pins((MWAA_REFERENCE / "preinstalled-python-packages.txt").read_text())


@pytest.fixture(scope="module")
def essential() -> dict[str, str]:
    return pins((MWAA_REFERENCE / "mwaa-essential-constraints.txt").read_text())


def bundle_requirements(bundle: Path) -> list[str]:
    return (bundle / "requirements.txt").read_text().splitlines()


# ---------------------------------------------------------------------------------------------
# Layout


def test_bundle_layout(bundle: Path) -> None:
    top = {p.name for p in bundle.iterdir()}
    # plugins.zip: the Leadflow UI plugin (tests/plugins/test_mwaa_plugin.py); no startup script.
    assert top == {"dags", "requirements.txt", "README.txt", "plugins.zip"}
    dags = bundle / "dags"
    assert (dags / ".airflowignore").is_file()
    assert (dags / "constraints.txt").is_file()
    assert {p.name for p in dags.glob("*.py")} == {f"{dag_id}.py" for dag_id in EXPECTED_DAG_IDS}
    for path in bundle.rglob("*"):
        assert "__pycache__" not in path.parts, path
        assert path.suffix not in {".pyc", ".pyo"}, path


def test_dag_files_and_logic_package_are_copied_verbatim(bundle: Path) -> None:
    dags = bundle / "dags"
    for source in (REPO / "dags").glob("*.py"):
        assert (dags / source.name).read_bytes() == source.read_bytes()
    package = REPO / "include" / "leadflow"
    expected = {p.relative_to(package) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    bundled = {p.relative_to(dags / "leadflow") for p in (dags / "leadflow").rglob("*") if p.is_file()}
    assert bundled == expected
    for relative in expected:
        assert (dags / "leadflow" / relative).read_bytes() == (package / relative).read_bytes()


def test_nothing_from_devstack_or_tests_is_bundled(bundle: Path) -> None:
    files = [p for p in bundle.rglob("*") if p.is_file()]
    for path in files:
        parts = path.relative_to(bundle).parts
        assert not {"devstack", "tests", "bench"} & set(parts), path
    bundled_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.stat().st_size}
    for folder in ("devstack", "tests"):
        for source in (REPO / folder).rglob("*"):
            if source.is_file() and source.stat().st_size and "__pycache__" not in source.parts:
                assert hashlib.sha256(source.read_bytes()).hexdigest() not in bundled_hashes, source


def test_airflowignore_uses_airflow3_glob_syntax(bundle: Path) -> None:
    lines = [
        re.sub(r"\s*#.*", "", line).strip() for line in (bundle / "dags" / ".airflowignore").read_text().splitlines()
    ]
    patterns = [line for line in lines if line]
    assert "leadflow/**" in patterns
    assert "constraints.txt" in patterns
    assert not any(p.startswith(("syntax", "^")) or p.endswith("$") for p in patterns), patterns


def test_readme_lists_the_upload_commands(bundle: Path) -> None:
    text = (bundle / "README.txt").read_text()
    assert 'aws s3 sync dags "s3://$MWAA_BUCKET/dags"' in text
    assert 'aws s3 cp requirements.txt "s3://$MWAA_BUCKET/requirements.txt"' in text
    assert "aws mwaa update-environment" in text
    assert "--requirements-s3-object-version" in text


# ---------------------------------------------------------------------------------------------
# Loaded the way MWAA loads it

LOAD_BUNDLE = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    from pathlib import Path

    repo, dags = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    venv = Path(sys.prefix).resolve()
    # Neutralise leadflow-dev.pth (it adds <repo>/include and <repo>) and anything else of the repo
    # outside the venv; keep the venv's own site-packages.
    def from_repo(entry):
        path = Path(entry or ".").resolve()
        return path.is_relative_to(repo) and not path.is_relative_to(venv)
    sys.path[:] = [p for p in sys.path if not from_repo(p)]
    report = {"leadflow_before": importlib.util.find_spec("leadflow") is not None}

    from airflow.dag_processing.dagbag import BundleDagBag  # what the DAG processor uses
    from airflow.utils.file import find_dag_file_paths

    report["dag_files"] = sorted(Path(p).relative_to(dags).as_posix() for p in find_dag_file_paths(dags, False))
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    report["import_errors"] = {str(k): str(v) for k, v in bag.import_errors.items()}
    report["dag_ids"] = sorted(bag.dag_ids)
    try:
        import leadflow
        report["leadflow_file"] = str(Path(leadflow.__file__).resolve())
    except ImportError as error:
        report["leadflow_file"] = f"not importable: {error}"
    report["devstack_importable"] = importlib.util.find_spec("devstack") is not None
    report["loaded_from_repo"] = sorted(
        name for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None) and from_repo(module.__file__)
    )
    report["sys_path_from_repo"] = [p for p in sys.path if from_repo(p)]
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def loaded(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("mwaa-load")
    dags = work / "dags"
    shutil.copytree(bundle / "dags", dags)  # an empty folder holding only what goes to S3
    home = work / "airflow-home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(work / "plugins"),
    }
    result = subprocess.run(
        [sys.executable, "-P", "-c", LOAD_BUNDLE, str(REPO), str(dags)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT")]
    output = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    assert result.returncode == 0, output
    assert lines, output
    report = json.loads(lines[-1].removeprefix("REPORT"))
    report["dags"] = str(dags.resolve())
    return report


def test_bundle_dags_parse_without_the_repository(loaded: dict) -> None:
    assert loaded["leadflow_before"] is False, "leadflow was importable before the bundle was on sys.path"
    assert loaded["import_errors"] == {}
    assert set(loaded["dag_ids"]) == EXPECTED_DAG_IDS


def test_leadflow_comes_from_the_bundle_and_devstack_is_absent(loaded: dict) -> None:
    assert Path(loaded["leadflow_file"]).is_relative_to(loaded["dags"]), loaded["leadflow_file"]
    assert loaded["devstack_importable"] is False
    assert loaded["loaded_from_repo"] == []
    assert loaded["sys_path_from_repo"] == []


def test_airflowignore_keeps_the_package_out_of_dag_parsing(loaded: dict) -> None:
    # safe_mode off: every .py file not ignored would be parsed for DAGs.
    assert loaded["dag_files"] == sorted(f"{dag_id}.py" for dag_id in EXPECTED_DAG_IDS)


# ---------------------------------------------------------------------------------------------
# requirements.txt and constraints


def test_requirements_first_line_is_the_bundled_constraints(bundle: Path) -> None:
    assert bundle_requirements(bundle)[0] == CONSTRAINT_LINE


def test_requirements_are_exact_pins_from_constraints(bundle: Path, constraints: dict[str, str]) -> None:
    bundled = pins((bundle / "dags" / "constraints.txt").read_text())
    lines = bundle_requirements(bundle)[1:]
    assert lines, "no requirements at all?"
    for line in lines:
        match = PIN.match(line)
        assert match, f"not a name==version line: {line!r}"
        assert not match[2], f"extras in {line!r}"
        name = canonicalize_name(match[1])
        assert constraints.get(name) == match[3], f"{line} but constraints.txt pins {constraints.get(name)}"
        assert bundled.get(name) == match[3], f"{line} but the bundled constraints pin {bundled.get(name)}"


def test_requirements_list_only_what_mwaa_lacks(
    bundle: Path, preinstalled: dict[str, str], essential: dict[str, str]
) -> None:
    listed = pins("\n".join(bundle_requirements(bundle)[1:]))
    assert not set(listed) & set(preinstalled), "preinstalled on MWAA, must not be listed"
    for name, version in listed.items():
        assert essential.get(name, version) == version, f"{name}: MWAA's essential pin is {essential[name]}"
    # ... and everything the runtime requirements need that MWAA lacks, extras included.
    from importlib import metadata

    expected = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            names = {canonicalize_name(requirement.name)}
            for extra in requirement.extras:
                for dep in metadata.requires(requirement.name) or []:
                    dep_req = Requirement(dep)
                    marker = dep_req.marker
                    if marker and marker.evaluate({"extra": extra}) and not marker.evaluate({"extra": ""}):
                        names.add(canonicalize_name(dep_req.name))
            expected |= {n for n in names if n not in preinstalled}
    assert set(listed) == expected
    assert "s3fs" in listed  # the amazon provider's s3fs extra: ObjectStoragePath on s3:// needs it


def test_no_package_pinned_differently_from_mwaa(
    bundle: Path, preinstalled: dict[str, str], essential: dict[str, str]
) -> None:
    bundled = pins((bundle / "dags" / "constraints.txt").read_text())
    for name, version in essential.items():
        assert bundled.get(name, version) == version, f"{name}: essential {version}, bundle {bundled[name]}"
    listed = pins("\n".join(bundle_requirements(bundle)[1:]))
    for name, version in listed.items():
        assert preinstalled.get(name, version) == version


def test_bundled_constraints_are_official_plus_runtime_additions(bundle: Path) -> None:
    repo_text = (REPO / "constraints.txt").read_text()
    bundled_text = (bundle / "dags" / "constraints.txt").read_text()
    assert official_part(bundled_text) == official_part(repo_text)
    repo_additions = pins(repo_text[repo_text.index("# leadflow additions") :])
    bundled_additions = pins(bundled_text[bundled_text.index("# leadflow additions") :])
    assert bundled_additions.items() <= repo_additions.items()
    assert bundled_additions.get("phonenumbers") == repo_additions["phonenumbers"]
    assert bundled_additions.get("apache-airflow") == "3.3.1"


def test_no_dev_only_package_in_requirements_or_bundled_constraints(bundle: Path) -> None:
    for path in (bundle / "requirements.txt", bundle / "dags" / "constraints.txt"):
        names = set(pins(path.read_text()))
        for dev in DEV_ONLY_NAMES:
            assert not any(dev in name for name in names), f"{dev} in {path.name}"
            assert dev not in path.read_text().lower(), f"{dev!r} mentioned in {path.name}"


# ---------------------------------------------------------------------------------------------
# The repository's own pins


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-dev.txt"])
def test_repository_pins_agree_with_constraints(requirements: str, constraints: dict[str, str]) -> None:
    pinned = {}
    for line in (REPO / requirements).read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            exact = [s.version for s in requirement.specifier if s.operator == "=="]
            if exact:
                pinned[canonicalize_name(requirement.name)] = exact[0]
    assert pinned
    disagree = {
        name: (version, constraints.get(name)) for name, version in pinned.items() if constraints.get(name) != version
    }
    assert disagree == {}, f"{requirements} pin vs constraints.txt: {disagree}"


@pytest.mark.skipif(not SHARED_REFERENCE.is_dir(), reason="no shared MWAA reference copy on this machine")
@pytest.mark.parametrize("name", ["preinstalled-python-packages.txt", "mwaa-essential-constraints.txt"])
def test_vendored_mwaa_lists_match_the_shared_reference(name: str) -> None:
    assert (MWAA_REFERENCE / name).read_text() == (SHARED_REFERENCE / name).read_text()


def test_plugins_zip_only_for_real_plugins(tmp_path: Path) -> None:
    """A repository copy with a plugin gets plugins.zip (contents at the zip's top level)."""
    import zipfile

    repo = tmp_path / "repo"
    for item in ("dags", "include", "requirements.txt", "constraints.txt"):
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            repo.mkdir(exist_ok=True)
            shutil.copy2(source, repo / item)
    (repo / "plugins").mkdir()
    (repo / "plugins" / ".gitkeep").write_text("")
    command = [BUILDER_PYTHON, str(REPO / "scripts" / "mwaa_bundle.py"), "--repo", str(repo)]
    subprocess.run([*command, "--out", str(tmp_path / "a")], check=True, capture_output=True)
    assert not (tmp_path / "a" / "plugins.zip").exists()
    (repo / "plugins" / "my_plugin.py").write_text("from airflow.plugins_manager import AirflowPlugin\n")
    subprocess.run([*command, "--out", str(tmp_path / "b")], check=True, capture_output=True)
    with zipfile.ZipFile(tmp_path / "b" / "plugins.zip") as archive:
        assert archive.namelist() == ["my_plugin.py"]


# ---------------------------------------------------------------------------------------------
# The slim google provider (scripts/mwaa_wheels.py; installed and tested by `make mwaa-check`)


def test_slim_bundle_ships_the_google_provider_with_only_the_tested_dependencies(tmp_path: Path) -> None:
    """The rewritten wheel: same code, a local version the constraints' ==22.3.0 still accepts,
    Requires-Dist exactly the tested list, and a RECORD pip will verify."""
    import base64
    import zipfile
    from email.parser import Parser

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    sys.path.insert(0, str(REPO / "scripts"))
    from mwaa_wheels import GOOGLE_SLIM_REQUIRES

    out = tmp_path / "slim"
    command = [BUILDER_PYTHON, str(REPO / "scripts" / "mwaa_bundle.py"), "--out", str(out), "--slim-google"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    lines = bundle_requirements(out)
    assert lines[:2] == [CONSTRAINT_LINE, "--find-links /usr/local/airflow/plugins"]
    google = next(line for line in lines if line.startswith("apache-airflow-providers-google=="))
    version = google.split("==")[1]
    assert Version(version) in SpecifierSet("==22.3.0")
    assert Version(version).local == "leadflow.slim1"
    with zipfile.ZipFile(out / "plugins.zip") as plugins:
        # Beside the Leadflow UI plugin's modules, the one wheel: the slim provider.
        (wheel_name,) = [name for name in plugins.namelist() if name.endswith(".whl")]
        assert wheel_name.startswith(f"apache_airflow_providers_google-{version}-")
        (tmp_path / wheel_name).write_bytes(plugins.read(wheel_name))
    with zipfile.ZipFile(tmp_path / wheel_name) as wheel:
        names = wheel.namelist()
        dist_info = f"apache_airflow_providers_google-{version}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
        assert metadata["Version"] == version
        assert metadata.get_all("Requires-Dist") == GOOGLE_SLIM_REQUIRES
        assert "airflow/providers/google/common/hooks/base_google.py" in names
        for row in wheel.read(f"{dist_info}/RECORD").decode().splitlines():
            name, digest, size = row.split(",")
            if digest:
                data = wheel.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (f"sha256={expected}", len(data)), name
