"""The opt-in compiled core: the suite runs on the build it expects, and a stale extension is
refused rather than run in place of its edited source."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import service.core
from service.core import BUILT_FROM, COMPILED, source_digest, stale_builds

ROOT = Path(__file__).resolve().parents[1]
# Read at import: the suite's fixtures clear FALLBACK_* variables around each test.
EXPECT_COMPILED = os.environ.get("FALLBACK_TEST_EXPECT_COMPILED") == "1"


def test_the_core_runs_as_built() -> None:
    # `make unit-compiled` sets the variable: there every compiled module must be an extension
    # (else the suite would pass on the source and prove nothing); elsewhere, none may be.
    compiled = EXPECT_COMPILED
    for name in COMPILED:
        module = importlib.import_module(f"service.core.{name}")
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)) is compiled, module.__file__


def test_an_extension_not_built_from_the_source_beside_it_is_stale(tmp_path: Path) -> None:
    built = tmp_path / f"rules{EXTENSION_SUFFIXES[0]}"
    source = tmp_path / "rules.py"
    built.write_bytes(b"")
    source.write_text("X = 1\n")
    assert stale_builds(tmp_path) == [(built, source)]  # no record of what it was built from
    (tmp_path / BUILT_FROM).write_text(json.dumps({"rules": source_digest(source)}))
    assert stale_builds(tmp_path) == []
    source.write_text("X = 2\n")  # edited after the build, whatever the file times say
    assert stale_builds(tmp_path) == [(built, source)]
    (tmp_path / "text.py").write_text("")  # a source never built is no stale build
    source.write_text("X = 1\n")
    assert stale_builds(tmp_path) == []


def test_importing_the_core_refuses_a_stale_extension(tmp_path: Path) -> None:
    core = tmp_path / "service" / "core"
    core.mkdir(parents=True)
    shutil.copy(ROOT / "service" / "__init__.py", tmp_path / "service")
    shutil.copy(Path(service.core.__file__), core)
    (core / f"rules{EXTENSION_SUFFIXES[0]}").write_bytes(b"not a library")
    (core / BUILT_FROM).write_text(json.dumps({"rules": "0" * 64}))
    (core / "rules.py").write_text("EDITED = True\n")
    run = subprocess.run(
        [sys.executable, "-c", "import service.core.rules"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)},
    )
    assert run.returncode == 1
    assert "was not compiled from" in run.stderr and "rules.py as it is now" in run.stderr
