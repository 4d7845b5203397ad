"""Wheels for the MWAA bundle: the slim google provider and the offline wheelhouse.

**Slim google provider.** ``apache-airflow-providers-google`` declares ~75 dependencies (ray,
scikit-learn, litellm, google-cloud-aiplatform, ~50 ``google-cloud-*``), ~130 packages once
resolved; leadflow uses only ``GoogleBaseHook`` (credentials from the ``google_cloud_platform``
connection, whose type and UI form the provider owns) and googleapiclient's Sheets/Drive
clients. A requirements file cannot say ``--no-deps`` for one package, so
:func:`slim_provider_wheel` rewrites the provider's wheel: the same code, version
``22.3.0+leadflow.slim1`` (a PEP 440 local version, which ``==22.3.0`` in the constraints still
matches), and ``Requires-Dist`` reduced to :data:`GOOGLE_SLIM_REQUIRES`, the list the MWAA check
tests (``make mwaa-check`` runs the whole suite on it). The wheel ships in ``plugins.zip`` and
requirements.txt finds it there (``--find-links /usr/local/airflow/plugins``).

**Offline wheelhouse** (``--offline``): every wheel the install adds to the MWAA image goes into
``plugins.zip`` and requirements.txt starts with ``--no-index --find-links
/usr/local/airflow/plugins``, for environments without a route to PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GOOGLE = "apache-airflow-providers-google"
SLIM_LOCAL_VERSION = "leadflow.slim1"
# What GoogleBaseHook imports at module level (google.auth, google_auth_httplib2, gcloud.aio.auth,
# google.api_core, googleapiclient, the secret-manager client behind credentials_provider,
# asgiref, tenacity, requests) and what the connection form needs (flask-appbuilder and wtforms
# are in the MWAA image). Everything else the provider declares serves operators we do not use.
GOOGLE_SLIM_REQUIRES = [
    "apache-airflow>=2.11.0",
    "apache-airflow-providers-common-compat>=1.13.0",
    "apache-airflow-providers-common-sql>=1.32.0",
    "asgiref>=3.5.2",
    "gcloud-aio-auth>=5.2.0",
    "google-api-core>=2.30.3",
    "google-api-python-client>=2.0.2",
    "google-auth>=2.29.0",
    "google-auth-httplib2>=0.0.1",
    "google-cloud-secret-manager>=2.16.0",
    "proto-plus>=1.26.0",
    "tenacity>=8.3.0",
]
# MWAA runs on x86_64 Amazon Linux 2023 (glibc 2.34): wheels for these tags, CPython 3.12.
PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def pip_download(pins: list[str], dest: Path, env: dict[str, str] | None = None) -> list[Path]:
    """Download exactly these ``name==version`` wheels (no dependencies) for MWAA's platform."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", *platforms,
        "-d", str(dest), *pins,
    ]  # fmt: skip
    if env is None:  # only PyPI, whatever this machine's pip configuration adds
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    subprocess.run(command, check=True, env=env)  # noqa: S603 - fixed command line
    return sorted(dest.glob("*.whl"))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def slim_provider_wheel(original: Path, dest: Path, requires: list[str] = GOOGLE_SLIM_REQUIRES) -> Path:
    """The provider's wheel with version ``<v>+leadflow.slim1`` and only ``requires`` declared."""
    with zipfile.ZipFile(original) as source:
        names = source.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        version = dist_info.removesuffix(".dist-info").split("-")[1]
        slim_version = f"{version}+{SLIM_LOCAL_VERSION}"
        new_dist_info = dist_info.replace(version, slim_version)
        metadata = source.read(f"{dist_info}/METADATA").decode()
        kept = [
            line
            for line in metadata.splitlines()
            if not line.startswith("Requires-Dist:") and not line.startswith("Provides-Extra:")
        ]
        header_end = kept.index("") if "" in kept else len(kept)
        kept[header_end:header_end] = [f"Requires-Dist: {r}" for r in requires]
        new_metadata = "\n".join(kept).replace(f"Version: {version}", f"Version: {slim_version}", 1) + "\n"
        wheel_name = original.name.replace(f"-{version}-", f"-{slim_version}-", 1)
        target = dest / wheel_name
        dest.mkdir(parents=True, exist_ok=True)
        records: list[str] = []
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for name in names:
                if name.endswith(".dist-info/RECORD"):
                    continue
                data = source.read(name)
                new_name = name.replace(dist_info + "/", new_dist_info + "/", 1)
                if name == f"{dist_info}/METADATA":
                    data = new_metadata.encode()
                out.writestr(new_name, data)
                records.append(f"{new_name},{_record_hash(data)},{len(data)}")
            records.append(f"{new_dist_info}/RECORD,,")
            out.writestr(f"{new_dist_info}/RECORD", "\n".join(records) + "\n")
    return target


def slim_version(version: str) -> str:
    return f"{version}+{SLIM_LOCAL_VERSION}"


def closure_pins(requirements: Path, constraints: Path, uv: Path) -> list[str]:
    """Every ``name==version`` a pip install of ``requirements`` resolves to (for MWAA's platform)."""
    with tempfile.TemporaryDirectory(prefix="leadflow-wheels-") as tmp:
        plain = Path(tmp) / "requirements.txt"
        lines = [line for line in requirements.read_text().splitlines() if not line.startswith("-")]
        plain.write_text("\n".join(lines) + "\n")
        command = [
            str(uv), "pip", "compile", str(plain), "-c", str(constraints), "--python-version", "3.12",
            "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--no-annotate", "--quiet",
            "--find-links", str(requirements.parent),
        ]  # fmt: skip
        result = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ})  # noqa: S603
    return [line.strip() for line in result.stdout.splitlines() if re.match(r"^[A-Za-z0-9].*==", line)]


MWAA_PLUGINS_DIR = "/usr/local/airflow/plugins"
FIND_LINKS_LINE = f"--find-links {MWAA_PLUGINS_DIR}"


def _pin_name(pin: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(pin.split("==")[0].split("[")[0])


def wheel_options(
    out: Path, requirements: list[str], reference: Path, slim_google: bool, offline: bool
) -> tuple[list[str], list[str], list[Path]]:
    """(requirements.txt option lines, its pins, the wheels for plugins.zip) of a slim/offline bundle."""
    from mwaa_bundle import CONSTRAINT_LINE, read_pins

    staging = out / "wheels"  # what plugins.zip carries; not uploaded by itself
    wheels: list[Path] = []
    pins = list(requirements)
    if slim_google:
        index = next(i for i, pin in enumerate(pins) if _pin_name(pin) == GOOGLE)
        version = pins[index].split("==")[1]
        with tempfile.TemporaryDirectory(prefix="leadflow-google-") as tmp:
            original = pip_download([f"{GOOGLE}=={version}"], Path(tmp))[0]
            wheels.append(slim_provider_wheel(original, staging))
        pins[index] = f"{GOOGLE}=={slim_version(version)}"
    options = [CONSTRAINT_LINE, FIND_LINKS_LINE]
    if offline:
        listed = out / "wheels" / "requirements.txt"
        listed.parent.mkdir(parents=True, exist_ok=True)
        listed.write_text("\n".join(pins) + "\n")
        preinstalled = read_pins(reference / "preinstalled-python-packages.txt")
        resolved = closure_pins(listed, out / "dags" / "constraints.txt", Path(sys.executable).parent / "uv")
        listed.unlink()
        added = [
            pin
            for pin in resolved
            if preinstalled.get(_pin_name(pin)) != pin.split("==")[1]
            and not pin.split("==")[1].endswith(SLIM_LOCAL_VERSION)
        ]
        wheels = sorted(set(pip_download(added, staging)) | set(wheels))
        options = ["--no-index", FIND_LINKS_LINE, CONSTRAINT_LINE]
    return options, pins, wheels
