"""The architecture's promises: the core does no I/O, the layout shows what lives where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_core_loads_no_io_library() -> None:
    probe = (
        "import sys\n"
        "import service.core, service.core.text, service.core.rules, service.core.models\n"
        "import service.core.settle\n"
        "bad = ('aiokafka', 'faststream', 'httpx', 'prometheus_client', 'uvicorn', 'service.app')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m in bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_module_opens_with_a_sentence() -> None:
    missing = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        text = path.read_text()
        if not text.startswith('"""') or len(text.split("\n", 1)[0].strip('"').strip()) < 10:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing


def test_development_code_is_kept_out_of_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "rm -rf service/dev" in dockerfile
    shipped = [
        p
        for p in (ROOT / "service").rglob("*.py")
        if "dev" not in p.relative_to(ROOT / "service").parts
    ]
    for path in shipped:
        assert "service.dev" not in path.read_text(), path
