"""Logging: plain or JSON lines, phone numbers masked."""

from __future__ import annotations

import logging
import re
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


# A run of digits, with the separators phone numbers are written with, of 8 digits or more.
_NUMBER_LIKE = re.compile(r"(?<![\d])\+?\d(?:[\d\-. ]*\d)?(?![\d])")
_DATE = re.compile(r"(?:19|20)\d\d([-./])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])")


def mask_numbers_in(text: str) -> str:
    """Free text with every phone-number-like run of 8 or more digits masked like
    `mask_number` (separators kept): `010-1234-5678` → `010-****-5678`."""

    def mask(match: re.Match[str]) -> str:
        found = match.group(0)
        if _DATE.fullmatch(found):  # 2026-12-02: a date, never a phone number (they start 0)
            return found
        places = [i for i, ch in enumerate(found) if ch.isdigit()]
        if len(places) < 8:
            return found
        hidden = set(places[3:-4])
        return "".join("*" if i in hidden else ch for i, ch in enumerate(found))

    return _NUMBER_LIKE.sub(mask, text)


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
    # httpx logs one line per HTTP call at INFO (one per SMS with the nhn sink).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
