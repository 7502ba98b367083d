"""`make run`, `make run-nhn`, `make run-solapi`, `make run-failover` and `make run-console` as a
newcomer runs them: the demo process, its own embedded broker, and the story of each sample told
to the end (DELIVERED and UNDELIVERED, §11)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from service.dev.broker import free_port
from service.dev.demo import REFUSING, sms_service_result
from tests.waiting import eventually_sync

SENT_OR_REQUESTED = ("REQUESTED   demo-otp:1", "REJECTED    demo-blocked:1 sender_number_blocked")
FINALS = (
    "DELIVERED   demo-otp:1",
    "DELIVERED   demo-emoji:1",
    "UNDELIVERED demo-notice:1 undelivered",
)


def test_the_played_sms_service_refuses_one_handset() -> None:
    now = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    refused = sms_service_result({"fallbackId": "a:1", "recipientNo": REFUSING}, now)
    delivered = sms_service_result({"fallbackId": "b:1", "recipientNo": "01012345678"}, now)
    assert (refused["status"], refused["resultCode"]) == ("UNDELIVERED", "3006")
    assert (delivered["status"], delivered["resultCode"]) == ("DELIVERED", "1000")
    assert delivered["reportedAt"] == "2026-11-22T05:00:00.000+00:00"


def _demo_until(
    expected: tuple[str, ...], sink: str, within: float = 90.0, args: tuple[str, ...] = ()
) -> str:
    """Run the demo until every line of `expected` was printed, then Ctrl-C it; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")}
    env["FALLBACK_SINK"] = sink
    process = subprocess.Popen(
        [sys.executable, "-m", "service.dev.demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if not all(line.encode() in output for line in expected):
                if selector.select(timeout=0.5):
                    output += os.read(process.stdout.fileno(), 65536)
                continue
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=30)
            return (output + rest).decode()
        raise AssertionError(output.decode()[-3000:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


SENT_BY = {
    "kafka": (),
    "nhn": ("SENT        demo-otp:1 (nhn: 0 SUCCESS)",),
    "solapi": ("SENT        demo-otp:1 (solapi: 2000 ",),
    # make run-failover: the NHN stand-in refuses connections, Solapi takes everything.
    "nhn,solapi": ("SENT        demo-otp:1 (solapi: 2000 ",),
}


@pytest.mark.broker
@pytest.mark.parametrize("sink", list(SENT_BY))
def test_make_run_tells_every_sample_to_its_end(sink: str) -> None:
    args = ("--nhn-down",) if sink == "nhn,solapi" else ()
    out = _demo_until(SENT_OR_REQUESTED + SENT_BY[sink] + FINALS, sink, args=args)
    assert "DEAD-LETTER invalid_json" in out
    assert "stopping after" in out
    # One final outcome each, however many results came (the nhn stand-in is polled and also
    # calls the webhook).
    for line in FINALS:
        assert out.count(line) == 1, line


@pytest.mark.broker
def test_make_run_console_serves_the_console_with_an_account_for_the_run() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")}
    port = free_port()
    env["FALLBACK_CONSOLE_PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "service.dev.demo", "--console"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        said = b""
        deadline = time.monotonic() + 90
        while b"console ready" not in said or b"\n" not in said.split(b"console ready")[1]:
            assert time.monotonic() < deadline and process.poll() is None, said.decode()
            said += os.read(process.stdout.fileno(), 65536)
        line = said.split(b"console ready")[1].split(b"\n")[0].decode()
        password = line.split("password ")[1].rstrip(")")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url) as client:
            refused = client.post("/login", data={"username": "demo", "password": "wrong"})
            assert refused.status_code == 401
            answer = client.post("/login", data={"username": "demo", "password": password})
            assert answer.status_code == 303 and "fallback_console" in answer.cookies

            def indexed() -> bool:
                return "demo-otp:1" in client.get("/fallbacks").text

            eventually_sync(indexed, 60, "the demo's samples in the console")
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
