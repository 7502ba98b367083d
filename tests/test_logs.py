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


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call 010-1234-5678 now", "call 010-****-5678 now"),
        ("01012345678", "010****5678"),
        ("+82 10 1234 5678", "+82 1* **** 5678"),
        ("order 2026112212345 shipped", "order 202******2345 shipped"),
        ("code 482913", "code 482913"),  # 6 digits: no phone number
        ("a 0801234567 b", "a 080***4567 b"),
        # A date is no phone number: times stay readable in the console's JSON.
        ('"at": "2026-12-03T08:24:53.125+09:00"', '"at": "2026-12-03T08:24:53.125+09:00"'),
        ("on 2026.12.03, 010-1234-5678", "on 2026.12.03, 010-****-5678"),
        ("2026-13-45", "202*-13-45"),  # not a date: masked as any 8 digits are
    ],
)
def test_mask_numbers_in_free_text(text: str, masked: str) -> None:
    from service.logs import mask_numbers_in

    assert mask_numbers_in(text) == masked


def test_validation_errors_never_repeat_the_value() -> None:
    from service.core.models import Malformed, parse_failure_event
    from tests.factories import event_dict

    bad = orjson.dumps(
        event_dict(recipientNo=1012345678, resendParameter={"resendType": "010-3456-7890"})
    )
    result = parse_failure_event(bad)
    assert isinstance(result, Malformed)
    assert "resendParameter.resendType: Value error, expected SMS or LMS" in result.detail
    assert "3456" not in result.detail and "1012345678" not in result.detail
