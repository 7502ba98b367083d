"""`fallback-service run`, killed with SIGKILL once its dedupe markers are acknowledged, before
its outcomes are written (the window §7's "exactly one outcome" has to survive)."""

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from service.cli import main
from service.config import load_settings
from service.kafka.writer import AcknowledgedWriter
from service.pipeline.seams import Write

_write = AcknowledgedWriter.write
_MARKERS = load_settings().dedupe_topic_name


async def _write_then_die(self: Any, writes: Sequence[Write]) -> None:
    await _write(self, writes)
    if any(w.topic == _MARKERS for w in writes):
        os.kill(os.getpid(), signal.SIGKILL)


AcknowledgedWriter.write = _write_then_die  # type: ignore[method-assign]
sys.exit(main(["run"]))
