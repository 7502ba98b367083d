"""The architecture's promises: the core does no I/O, the layout shows what lives where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_core_loads_no_io_library() -> None:
    probe = (
        "import sys\n"
        "import pkgutil, importlib, service.core\n"
        "for m in pkgutil.iter_modules(service.core.__path__):\n"
        "    importlib.import_module('service.core.' + m.name)\n"
        "bad = ('aiokafka', 'faststream', 'httpx', 'prometheus_client', 'uvicorn', 'numpy',\n"
        "       'service.pipeline', 'service.kafka', 'service.state', 'service.runtime',\n"
        "       'service.sinks', 'service.ops', 'service.compat', 'service.config')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m in bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_link_to_a_section_of_the_docs_finds_it() -> None:
    """Links `file.md#anchor` and `#anchor` in the README and docs/ point at headings that exist
    (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens)."""
    import re

    def anchors(path: Path) -> set[str]:
        found = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip().lower()
                found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
        return found

    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([\w./-]*?)#([\w-]+)\)", doc.read_text()):
            linked = (doc.parent / target) if target else doc
            if not linked.exists() or anchor not in anchors(linked):
                broken.append(f"{doc.name}: {target}#{anchor}")
    assert not broken, broken


def test_the_compat_self_check_names_the_module_when_a_target_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiokafka.consumer.fetcher as fetcher

    from service import compat

    compat.self_check()  # the pinned versions have every target
    monkeypatch.delattr(fetcher, "MemoryRecords")
    with pytest.raises(compat.CompatError, match=r"service\.compat: .*MemoryRecords"):
        compat.self_check()


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
