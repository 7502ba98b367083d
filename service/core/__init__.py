"""The pure core: text rules, the decision order, wire models and settlement (contract §2-§7).

Nothing in this package does I/O or reads the clock; a test imports it in a fresh interpreter
and checks that no Kafka, HTTP or metrics library was loaded.

`COMPILED` can be built with mypyc (`FALLBACK_COMPILE_CORE=1`, see `setup.py`), which records
the SHA-256 of each source it compiled in `BUILT_FROM`. Python loads a module's extension in
preference to its source, so an extension built from other source than the one beside it would
run code that is no longer there: importing the core then fails, naming both files. (Hashes,
not modification times: installing a wheel does not keep its files' times in order.)
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

COMPILED = ("text", "rules")
"""The core modules the opt-in build compiles (hot: every event goes through them)."""

BUILT_FROM = "compiled-sources.json"
"""Written beside the extensions by the build: module name → SHA-256 of the source compiled."""


def source_digest(source: Path) -> str:
    """What `BUILT_FROM` records of a source file."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def stale_builds(directory: Path, modules: tuple[str, ...] = COMPILED) -> list[tuple[Path, Path]]:
    """(extension, source) pairs in `directory` whose extension was not built from that source."""
    manifest = directory / BUILT_FROM
    try:
        built_from = json.loads(manifest.read_text()) if manifest.exists() else {}
    except ValueError:
        built_from = {}
    stale = []
    for name in modules:
        source = directory / f"{name}.py"
        for suffix in EXTENSION_SUFFIXES:
            built = directory / f"{name}{suffix}"
            if built.exists() and source.exists() and built_from.get(name) != source_digest(source):
                stale.append((built, source))
    return stale


for _built, _source in stale_builds(Path(__file__).parent):
    raise ImportError(
        f"{_built} was not compiled from {_source} as it is now: build the core again "
        "(make compiled) or delete the extension to run the source"
    )
