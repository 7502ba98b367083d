"""Logging: plain or JSON lines, phone numbers masked."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from service.config import LogFormat


def mask_number(number: str) -> str:
    """`01012345678` → `010****5678`: never a whole phone number in a log."""
    if len(number) <= 4:
        return "*" * len(number)
    head = number[:3] if len(number) > 7 else number[:1]
    tail = number[-4:]
    return head + "*" * (len(number) - len(head) - len(tail)) + tail


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure(level: str, fmt: LogFormat) -> None:
    """Set up the root logger once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every rebalance step and retry at INFO; keep its warnings only.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
