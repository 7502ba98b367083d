"""Log lines: masked numbers, JSON format, outcome lines only for what was committed."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest

from service import logs
from service.config import LogFormat
from service.logs import JsonFormatter, mask_number


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("01012345678", "010****5678"),
        ("0215990000", "021***0000"),
        ("12345678", "123*5678"),
        ("1234567", "1**4567"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


def test_json_lines_carry_fields_and_exceptions() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "fallback.outcomes", logging.INFO, __file__, 1, "%s ok", ("R1:1",), None
    )
    record.fields = {"fallbackId": "R1:1", "status": "REQUESTED"}
    line = orjson.loads(formatter.format(record))
    assert line["message"] == "R1:1 ok"
    assert line["level"] == "INFO" and line["logger"] == "fallback.outcomes"
    assert line["fallbackId"] == "R1:1" and line["status"] == "REQUESTED"
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in orjson.loads(formatter.format(failed))["exception"]


def test_configure_json_writes_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", LogFormat.JSON)
        logging.getLogger("fallback.test").info("hello %d", 1)
        logging.getLogger("fallback.test").debug("hidden")
        logging.getLogger("aiokafka").info("rebalance chatter")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["hello 1"]
