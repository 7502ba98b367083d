"""The external checkers the deployment tests use, found or fetched as `make tools` leaves them.

kustomize is built from the Go module proxy into `.cache/bin`; promtool comes from Debian's
`prometheus` package; Chromium (the console's browser tests) from Debian's `chromium`; KEDA's
CRD schemas are read from the `github.com/kedacore/keda/v2` module zip, fetched once from the
Go module proxy into `.cache/keda`. Missing, a tool's tests are skipped with the reason, unless
FALLBACK_TEST_REQUIRE_TOOLS=1 (CI), which makes them fail.
"""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
KEDA_VERSION = "v2.18.1"
KEDA_ZIP = f"https://proxy.golang.org/github.com/kedacore/keda/v2/@v/{KEDA_VERSION}.zip"
REQUIRE_TOOLS = os.environ.get("FALLBACK_TEST_REQUIRE_TOOLS") == "1"


def missing(what: str) -> None:
    """Skip (or, in CI, fail) the test that needs `what`."""
    message = f"{what} (`make tools` gets it)"
    if REQUIRE_TOOLS:
        pytest.fail(f"required but missing: {message}")
    pytest.skip(f"missing: {message}")


def kustomize() -> str:
    local = CACHE / "bin" / "kustomize"
    found = str(local) if local.exists() else shutil.which("kustomize")
    if found is None:
        missing("kustomize")
    assert found is not None
    return found


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool")
    assert found is not None
    return found


def chromium() -> str:
    """Debian's Chromium, which Playwright drives (it never downloads a browser of its own)."""
    found = os.environ.get("FALLBACK_TEST_CHROMIUM") or shutil.which("chromium")
    if found is None:
        missing("chromium (Debian's package)")
    assert found is not None
    return found


def keda_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of KEDA's CRD for `kind` (ScaledObject, TriggerAuthentication)."""
    target = CACHE / "keda" / KEDA_VERSION
    plural = {"ScaledObject": "scaledobjects", "TriggerAuthentication": "triggerauthentications"}
    path = target / f"keda.sh_{plural[kind]}.yaml"
    if not path.exists():
        try:
            with urllib.request.urlopen(KEDA_ZIP, timeout=60) as response:
                archive = zipfile.ZipFile(io.BytesIO(response.read()))
        except OSError as exc:
            missing(f"KEDA {KEDA_VERSION} CRDs from the Go module proxy ({exc})")
        target.mkdir(parents=True, exist_ok=True)
        prefix = f"github.com/kedacore/keda/v2@{KEDA_VERSION}/config/crd/bases/"
        for name in plural.values():
            member = f"{prefix}keda.sh_{name}.yaml"
            (target / f"keda.sh_{name}.yaml").write_bytes(archive.read(member))
    crd = yaml.safe_load(path.read_text())
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    schema: dict[str, Any] = versions["v1alpha1"]["schema"]["openAPIV3Schema"]
    return schema
