"""plugins.zip carries the Leadflow plugin, and it loads the way MWAA loads it.

``make mwaa-check`` runs the same probe in a fresh MWAA-like venv after ``pip install``; here it
runs in the project venv against a freshly built bundle, with nothing of the repository on
``PYTHONPATH``: the plugin must find ``leadflow`` in the bundle's dags folder, as on MWAA.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
from mwaa_check import plugin_probe


def test_plugins_zip_holds_the_plugin_and_its_package(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "mwaa_bundle.py"), "--out", str(out)], check=True, capture_output=True
    )
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "plugins")
    assert {
        "leadflow_plugin.py",
        ".airflowignore",
        "leadflow_ui/app.py",
        "leadflow_ui/templates/overview.html",
    } <= names
    assert not any("__pycache__" in name or name.startswith("tests") for name in names)
    plugin_probe(sys.executable, out, tmp_path / "plugins")
