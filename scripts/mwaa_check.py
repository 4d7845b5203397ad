"""`make mwaa-check`: install the MWAA bundle as MWAA does, into an MWAA-like venv, and measure it.

    python scripts/mwaa_check.py --bundle dist/mwaa [--tests] [--offline]

1. A new MWAA-like venv per check (``dist/mwaa-check/venv-*``): Python 3.12 plus every package
   of ``deploy/mwaa-3.3.1/preinstalled-python-packages.txt`` at its version (uv, ``--no-deps``:
   the image's bill of materials is its whole closure). Not timed.
2. ``pip install -r requirements.txt`` of the bundle, **with pip** as MWAA runs it, with no
   pip cache and no site pip configuration (so nothing faster than a fresh worker is used); the
   bundle's absolute MWAA paths (``/usr/local/airflow/dags``, ``/usr/local/airflow/plugins``)
   are mapped to the bundle's folders (``plugins.zip`` unzipped, as MWAA does).
3. Load the Leadflow UI plugin from the unzipped ``plugins.zip`` (only the bundle's dags folder on
   ``PYTHONPATH``, as on MWAA). Import both DAGs from the bundle's dags folder, the code the tasks import (Sheets/Drive
   client, the Google connection's hook and its UI form, pandas, pymongo, openai, s3fs), and
   print the wall time and the packages added (``pip freeze`` before/after).
4. ``--tests``: install the dev-only lines of ``requirements-dev.txt`` (stand-ins, pytest, the
   topology test's Celery/Postgres drivers) into the same venv and run the whole test suite
   against it, in ``make test``'s two passes (``make mwaa-check`` does, for the reduced google set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mwaa_bundle import MWAA_DAGS_DIR, MWAA_REFERENCE, REPO, read_pins

MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
WORK = REPO / "dist" / "mwaa-check"


def dev_only_requirements() -> list[str]:
    """What ``requirements-dev.txt`` adds to the runtime set (stand-ins, pytest, the topology's
    Celery/Postgres drivers): the MWAA image already has some of them, and pip keeps those."""
    lines = (REPO / "requirements-dev.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "-"))]


# What the tasks import at run time (the DAG files import none of it, see bench/parse_time.py).
RUNTIME_PROBE = r"""
import sys
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
# Every DAG file of the bundle, each dag_id being its file's stem (the project's rule).
shipped = sorted(p.stem for p in Path(sys.argv[1]).glob("*.py"))
assert sorted(bag.dag_ids) == shipped, (bag.dag_ids, shipped)
import leadflow.reports.pipeline, leadflow.reports.sheets, leadflow.followups.tasks, leadflow.messaging.trigger
import pandas, pymongo, openai, phonenumbers, s3fs
from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.providers.openai.hooks.openai import OpenAIHook
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
# The Sheets and Drive clients from the discovery documents shipped in the library (no network).
for api, version in (("sheets", "v4"), ("drive", "v3")):
    build(api, version, credentials=AnonymousCredentials(), cache_discovery=False)
# The connection form of the Google connection type, as the UI builds it.
from airflow.providers_manager import ProvidersManager
manager = ProvidersManager()
hook = manager.hooks["google_cloud_platform"]
assert hook is not None and hook.hook_class_name.endswith("GoogleBaseHook"), hook
widgets = manager.connection_form_widgets
assert any(key.startswith("extra__google_cloud_platform__") for key in widgets), sorted(widgets)[:5]
print("imports ok:", ", ".join(sorted(bag.dag_ids)))
"""


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(arg if len(arg) < 200 else arg.strip().splitlines()[0] + " ..." for arg in command), flush=True)
    return subprocess.run(command, check=True, **kwargs)  # noqa: S603 - fixed command lines


def python312() -> str:
    return subprocess.run(  # noqa: S603 - our own script
        [str(REPO / "scripts" / "find-python312.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def pip_env() -> dict[str, str]:
    """pip as on a fresh MWAA worker: no site configuration, no extra find-links, no cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def fresh_venv(name: str, reference: Path = MWAA_REFERENCE) -> Path:
    """A new venv holding exactly the MWAA image's packages (uv from its cache: seconds)."""
    pins = read_pins(reference / "preinstalled-python-packages.txt")
    target = WORK / name
    shutil.rmtree(target, ignore_errors=True)
    run([python312(), "-m", "venv", str(target)])
    bom = WORK / "mwaa-image-packages.txt"
    bom.write_text("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())) + "\n")
    uv = REPO / ".venv" / "bin" / "uv"
    # The bill of materials is the image's whole closure: no resolution needed.
    run([str(uv), "pip", "install", "--quiet", "--python", str(target / "bin" / "python"), "--no-deps", "-r", str(bom)])
    return target


def freeze(venv: Path) -> dict[str, str]:
    out = subprocess.run(  # noqa: S603 - the check venv's pip
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        check=True, capture_output=True, text=True, env=pip_env(),
    ).stdout  # fmt: skip
    return {line.split("==")[0].lower(): line.split("==")[1] for line in out.splitlines() if "==" in line}


# The Leadflow UI plugin as MWAA's web server loads it: plugins.zip unzipped as the plugins folder,
# only the bundle's dags folder (with the leadflow package) on PYTHONPATH.
PLUGIN_PROBE = r"""
from airflow import plugins_manager
info = {plugin["name"]: plugin for plugin in plugins_manager.get_plugin_info()}
errors = plugins_manager.get_import_errors()
assert not errors, errors
leadflow = info["leadflow"]
assert [app["url_prefix"] for app in leadflow["fastapi_apps"]] == ["/leadflow"], leadflow
views = {view["name"]: view["destination"] for view in leadflow["external_views"]}
assert views == {"Leadflow": "nav", "Summary": "dag_run"}, views
import leadflow_ui.overview, leadflow_ui.access  # what the routes import when they answer
print("plugin ok:", views)
"""


def plugin_probe(python: str, bundle: Path, plugins: Path) -> None:
    # Nothing of this machine's Airflow configuration: MWAA's own, the bundle and plugins.zip only.
    env = {k: v for k, v in pip_env().items() if not k.startswith("AIRFLOW")}
    env |= {
        "PYTHONPATH": str(bundle / "dags"),
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="leadflow-mwaa-home-"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    run([python, "-c", PLUGIN_PROBE], env=env)


def localised_requirements(bundle: Path, scratch: Path) -> Path:
    """requirements.txt with MWAA's absolute paths pointing into the bundle (plugins.zip unzipped)."""
    text = (bundle / "requirements.txt").read_text().replace(MWAA_DAGS_DIR, str(bundle / "dags"))
    if (bundle / "plugins.zip").exists():
        plugins = scratch / "plugins"
        with zipfile.ZipFile(bundle / "plugins.zip") as archive:
            archive.extractall(plugins)
        text = text.replace(MWAA_PLUGINS_DIR, str(plugins))
    target = scratch / "requirements.txt"
    target.write_text(text)
    return target


def check(bundle: Path, name: str, tests: bool) -> dict:
    venv = fresh_venv(name)
    before = freeze(venv)
    with tempfile.TemporaryDirectory(prefix="leadflow-mwaa-check-") as tmp:
        requirements = localised_requirements(bundle, Path(tmp))
        print("requirements.txt as MWAA's pip reads it:\n  " + requirements.read_text().replace("\n", "\n  "))
        started = time.monotonic()
        run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)], env=pip_env())
        seconds = time.monotonic() - started
        if (Path(tmp) / "plugins").is_dir():
            plugin_probe(str(venv / "bin" / "python"), bundle, Path(tmp) / "plugins")
    after = freeze(venv)
    added = sorted(set(after) - set(before))
    changed = sorted(n for n in before if n in after and before[n] != after[n])
    env = {
        **pip_env(),
        "PYTHONPATH": str(bundle / "dags"),
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="leadflow-mwaa-home-"),
    }
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    run([str(venv / "bin" / "python"), "-c", RUNTIME_PROBE, str(bundle / "dags")], env=env)
    result = {"name": name, "seconds": seconds, "added": added, "changed": changed}
    print(f"\n{name}: pip install took {seconds:.0f} s and added {len(added)} packages"
          f"{f', changed {changed}' if changed else ''}:\n  {' '.join(added)}\n", flush=True)  # fmt: skip
    if tests:
        run_suite(venv)
    return result


def run_suite(venv: Path) -> None:
    """The whole test suite on the reduced set: only dev-only tools are added to the venv."""
    python = str(venv / "bin" / "python")
    uv = REPO / ".venv" / "bin" / "uv"
    constraints = str(REPO / "constraints.txt")
    run([str(uv), "pip", "install", "--quiet", "--python", python, "-c", constraints, *dev_only_requirements()])
    site = subprocess.run(  # noqa: S603 - the check venv's interpreter
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "leadflow-dev.pth").write_text(f"{REPO / 'include'}\n{REPO}\n")
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        # The bundle builder (a dev tool) reads the dev venv's metadata; its tests run it there.
        "LEADFLOW_BUNDLE_BUILDER_PYTHON": str(REPO / ".venv" / "bin" / "python"),
    }
    # make test's two passes (in-process tests on two workers, then the real components alone).
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    failed = []
    for selection in (["-n", "2", "--dist", "worksteal", "-m", "not slow"], ["-m", "slow and not local_scheduler"]):
        if subprocess.run([*pytest, *selection], cwd=REPO, env=env).returncode != 0:  # noqa: S603
            failed.append(" ".join(selection))
    if failed:
        raise SystemExit(f"the suite failed on the reduced set: {failed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="a built bundle (repeatable)")
    parser.add_argument("--tests", action="store_true", help="run the test suite against the last bundle's set")
    args = parser.parse_args(argv)
    results = []
    for index, bundle in enumerate(args.bundle):
        last = index == len(args.bundle) - 1
        results.append(check(bundle.resolve(), f"venv-{bundle.name}", tests=args.tests and last))
    print("mwaa-check summary (pip, no cache, into the MWAA 3.3.1 image's packages):")
    for result in results:
        print(f"  {result['name']:28} {result['seconds']:6.0f} s  {len(result['added']):4d} packages added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
