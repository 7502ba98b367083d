"""Build hook for the opt-in compiled core: with FALLBACK_COMPILE_CORE=1, mypyc compiles the
modules `service.core.COMPILED` names into extensions, and the SHA-256 of each source goes into
`service/core/compiled-sources.json`, which the core checks on import. Without it (the default,
sdists and editable installs) the package stays pure Python.

Everything else about the package is in pyproject.toml.
"""

import json
import os
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# PEP 517 backends run this file without its directory on the path.
sys.path.insert(0, str(HERE))

ext_modules = []
if os.environ.get("FALLBACK_COMPILE_CORE") == "1":
    from mypyc.build import mypycify

    from service.core import BUILT_FROM, COMPILED, source_digest

    core = HERE / "service" / "core"
    ext_modules = mypycify([f"service/core/{name}.py" for name in COMPILED], opt_level="3")
    digests = {name: source_digest(core / f"{name}.py") for name in COMPILED}
    (core / BUILT_FROM).write_text(json.dumps(digests, indent=1) + "\n")

setup(ext_modules=ext_modules)
