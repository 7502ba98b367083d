"""Running `fallback-service run` as a real process: start, wait for readiness, clean up."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.waiting import eventually_sync

BIN = Path(sys.executable).parent
PROGRAMS = Path(__file__).parent / "programs"


def start(env: dict[str, str], *argv: str, output: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the service (or `argv`) with only `env`'s FALLBACK_* variables.

    Its output goes to a pipe, or appended to `output` for long runs (a full pipe would block
    the process).
    """
    full = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")} | env
    command = list(argv) or [str(BIN / "fallback-service"), "run"]
    sink = subprocess.PIPE if output is None else output.open("ab")
    return subprocess.Popen(command, env=full, stdout=sink, stderr=subprocess.STDOUT, cwd=PROGRAMS)


def wait_ready(port: int, process: subprocess.Popen[bytes], within: float = 30) -> list[int]:
    """Poll /readyz until 200; returns every status seen."""
    seen: list[int] = []

    def ready() -> bool:
        if process.poll() is not None:
            said = process.stdout.read().decode() if process.stdout else "(see its output file)"
            raise AssertionError(f"exited with {process.returncode}: {said}")
        try:
            seen.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code)
        except httpx.HTTPError:
            return False
        return seen[-1] == 200

    eventually_sync(ready, within, lambda: f"/readyz 200 (seen {seen})")
    return seen


def until_metric(port: int, sample: str, within: float = 20) -> None:
    """Poll /metrics until it has the line `sample` (name, labels and value)."""
    eventually_sync(
        lambda: (
            sample in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text.splitlines()
        ),
        within,
        f"{sample!r} on /metrics",
    )


@contextmanager
def service_process(
    env: dict[str, str], *argv: str, output: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The process while the block runs; killed afterwards if still running."""
    process = start(env, *argv, output=output)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
