"""`make run`'s demo: the whole service on a laptop in one command (development only).

Starts the embedded broker unless FALLBACK_KAFKA_BOOTSTRAP_SERVERS is set, creates the topics,
seeds example channels and sender numbers, runs `fallback-service run`, publishes sample
failures and prints what became of each. Ctrl-C stops everything it started.

Delivery results are on (§11): with the kafka sink the demo also plays the team's SMS service,
reporting each SMS request DELIVERED a second later, or UNDELIVERED for the recipient whose
handset refuses. With FALLBACK_SINK=nhn (`make run-nhn`) and no FALLBACK_NHN_BASE_URL, the local
NHN-compatible server (`service.dev.nhn_server`) plays the SMS API: SENT and FAILED outcomes
show its answers, and its results come back through the service's own collector (polled, and
pushed to `POST /webhooks/nhn`). FALLBACK_SINK=solapi (`make run-solapi`) does the same with the
local Solapi-compatible server (`service.dev.solapi_server`, reports to `POST /webhooks/solapi`),
and `make run-failover` runs FALLBACK_SINK=nhn,solapi with the NHN stand-in refusing
connections (`--nhn-down`): every fallback fails over to Solapi.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.config import Settings, load_settings
from service.console.users import Role, add_user
from service.core.models import DLQ_ERROR, DLQ_ERROR_DETAIL
from service.core.rules import KST
from service.dev.broker import EmbeddedBroker, free_port, start_broker
from service.dev.nhn_server import NhnServer
from service.dev.solapi_server import SolapiServer
from service.kafka.options import client_options
from service.logs import mask_number
from service.ops.topics import create_topics

CHANNELS: dict[str, dict[str, Any] | None] = {
    "sk-mybrand": {
        "enabled": True,
        "sendNo": "02-1599-0000",
        "title": "마이브랜드 알림",
        "unsubscribeNo": "080-123-4567",
        "adName": "마이브랜드",
    },
    "sk-paused": {"enabled": False, "sendNo": "02-1599-0000"},
}
SENDER_NUMBERS = {"0215990000": {"status": "ACTIVE"}, "0317770000": {"status": "BLOCKED"}}
# The handset that refuses: its fallback ends UNDELIVERED (3006 착신거절), the others DELIVERED.
REFUSING = "01022223333"
RESULT_DELAY_S = 1.0
WEBHOOK_SIGNATURE = "demo-signature"


def _event(request_id: str, content: str, **fields: Any) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "recipientSeq": 1,
        "senderKey": "sk-mybrand",
        "plusFriendId": "@mybrand",
        "templateCode": "DEMO",
        "recipientNo": "010-1234-5678",
        "content": content,
        "resultCode": "3018",
        "resultCodeName": "메시지를 전송할 수 없음",
        **fields,
    }


SAMPLES: list[tuple[str, bytes]] = [
    ("otp", orjson.dumps(_event("demo-otp", "[마이브랜드] 인증번호 482913 을 입력해 주세요."))),
    (
        "long notice",
        orjson.dumps(
            _event(
                "demo-notice",
                "[마이브랜드] 주문하신 상품이 발송되었습니다.\n\n"
                + "주문번호 2026112212345, 택배사 한진택배, 송장번호 123456789012. " * 4,
                recipientNo="010-2222-3333",
                buttons=[
                    {"ordering": 1, "type": "WL", "name": "배송조회", "linkMo": "https://m.ex.kr/t"}
                ],
            )
        ),
    ),
    ("emoji", orjson.dumps(_event("demo-emoji", "가입을 환영합니다 🎉 똠햏뷁 쿠폰 ♥️ 👍🏽"))),
    ("paused channel", orjson.dumps(_event("demo-paused", "안내", senderKey="sk-paused"))),
    (
        "blocked sender",
        orjson.dumps(
            _event("demo-blocked", "안내", resendParameter={"resendSendNo": "031-777-0000"})
        ),
    ),
    (
        "advertising",
        orjson.dumps(
            _event("demo-ad", "이번 주말 전 품목 20% 할인!", isAd=True, messageType="FRIENDTALK")
        ),
    ),
    ("malformed", b'{"requestId": "demo-bad", "recipientSeq": "one"'),
]


async def _publish(settings: Settings, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings.kafka()), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def _describe(topic: str, settings: Settings, value: bytes | None, headers: Any) -> str:
    if topic == settings.dlq_topic:
        h = dict(headers)
        return f"DEAD-LETTER {h[DLQ_ERROR].decode()}: {h[DLQ_ERROR_DETAIL].decode()[:70]}"
    data = orjson.loads(value or b"{}")
    if topic == settings.output_topic:
        body = data["body"].replace("\n", " / ")
        title = f" [{data['title']}]" if data["title"] else ""
        return (
            f"  -> {data['type']} {data['bodyBytes']}B from {data['sendNo']} to "
            f"{mask_number(data['recipientNo'])}{title}: {body[:60]}"
        )
    if topic == settings.results_topic:
        said = f"{data.get('resultCode') or ''} {data.get('resultMessage') or ''}".strip()
        return (
            f"  <- result {data['status']} for {data['fallbackId']} "
            f"from {data.get('provider')}: {said}"
        )
    reason = f" {data['reason']}" if data["reason"] else ""
    delivery = data.get("delivery")
    if delivery:
        said = " ".join(
            str(part)
            for part in (delivery["provider"], delivery["resultCode"], delivery["resultMessage"])
            if part
        )
        return (
            f"{data['status']:<11} {data['fallbackId']}{reason} ({said}, "
            f"{delivery['latencyMs'] / 1000:.1f} s after the AlimTalk failure)"
        )
    provider = data.get("provider")
    if provider:
        code = provider["resultCode"]
        said = (
            f"{code} {provider['resultMessage']}" if code is not None else provider["resultMessage"]
        )
        return f"{data['status']:<11} {data['fallbackId']}{reason} ({provider['name']}: {said})"
    return f"{data['status']:<11} {data['fallbackId']}{reason}"


async def _watch(settings: Settings, stop: asyncio.Event) -> None:
    topics = [
        settings.events_topic,
        settings.output_topic,
        settings.dlq_topic,
        settings.results_topic,
    ]
    consumer = await _reader(settings, *topics)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                for r in records:
                    print(_describe(tp.topic, settings, r.value, r.headers), flush=True)
    finally:
        await consumer.stop()


async def _reader(settings: Settings, *topics: str) -> AIOKafkaConsumer:
    """A started consumer of `topics` from their beginning, in no group."""
    consumer = AIOKafkaConsumer(
        *topics, **client_options(settings.kafka()), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    return consumer


def sms_service_result(request: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What the team's SMS service reports for one SMS request (§11), as the demo plays it."""
    refused = request["recipientNo"] == REFUSING
    return {
        "fallbackId": request["fallbackId"],
        "status": "UNDELIVERED" if refused else "DELIVERED",
        "resultCode": "3006" if refused else "1000",
        "resultMessage": "착신거절" if refused else "성공",
        "provider": "sms-service",
        "telecom": "SKT",
        "reportedAt": now.isoformat(timespec="milliseconds"),
    }


async def _play_sms_service(settings: Settings, stop: asyncio.Event) -> None:
    """The team's SMS service with the kafka sink: it reads the SMS requests and, a moment
    later, writes each one's handset result to the results topic."""
    consumer = await _reader(settings, settings.output_topic)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            requests = [orjson.loads(r.value or b"{}") for rs in batches.values() for r in rs]
            if not requests:
                continue
            await asyncio.sleep(RESULT_DELAY_S)
            now = datetime.now(KST)
            await _publish(
                settings,
                settings.results_topic,
                [(r["fallbackId"], orjson.dumps(sms_service_result(r, now))) for r in requests],
            )
    finally:
        await consumer.stop()


async def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        while process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"fallback-service exited with {process.returncode}")


async def _wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"the console exited with {process.returncode}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)).is_success:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the console did not answer on port {port}")


async def demo(nhn_down: bool = False, console: bool = False) -> int:
    """Run the demo until Ctrl-C; 0 after a clean stop. `nhn_down`: the NHN stand-in refuses
    connections, so that failover to Solapi shows. `console`: the operator console runs beside
    it, with an operator account made for this run."""
    embedded: EmbeddedBroker | None = None
    scratch = tempfile.TemporaryDirectory(prefix="fallback-demo-")
    env = dict(os.environ)
    if not env.get("FALLBACK_KAFKA_BOOTSTRAP_SERVERS"):
        embedded = start_broker()
        env["FALLBACK_KAFKA_BOOTSTRAP_SERVERS"] = embedded.bootstrap
        env.setdefault("FALLBACK_KAFKA_SESSION_TIMEOUT_MS", "2000")
        env.setdefault("FALLBACK_KAFKA_HEARTBEAT_INTERVAL_MS", "300")
        print(f"embedded broker (Tansu) on {embedded.bootstrap}")
    env.setdefault("FALLBACK_HTTP_PORT", str(free_port()))
    api: NhnServer | None = None
    sinks = [n.strip().lower() for n in env.get("FALLBACK_SINK", "").split(",")]
    if "nhn" in sinks and not env.get("FALLBACK_NHN_BASE_URL"):
        # The recipient opted out of advertising by 080: the ad sample shows a FAILED outcome.
        api = NhnServer(registered={"0215990000"}, opted_out={"01012345678"})
        await api.start()
        env["FALLBACK_NHN_BASE_URL"] = api.url
        env.setdefault("FALLBACK_NHN_APP_KEY", api.app_key)
        env.setdefault("FALLBACK_NHN_SECRET_KEY", api.secret_key)
        env.setdefault("FALLBACK_NHN_WEBHOOK_SIGNATURE", WEBHOOK_SIGNATURE)
        env.setdefault("FALLBACK_NHN_RESULTS_POLL_SECONDS", "2")
        api.control(
            {
                "results": {"delay": RESULT_DELAY_S, "undelivered": [REFUSING]},
                "webhook": {
                    "url": f"http://127.0.0.1:{env['FALLBACK_HTTP_PORT']}/webhooks/nhn",
                    "signature": env["FALLBACK_NHN_WEBHOOK_SIGNATURE"],
                },
            }
        )
        print(f"local NHN-compatible SMS API on {api.url}, reporting results")
        if nhn_down:
            await api.down(True)
            print("  ... and refusing connections: requests fail over to the next provider")
    solapi: SolapiServer | None = None
    if "solapi" in sinks and not env.get("FALLBACK_SOLAPI_BASE_URL"):
        solapi = SolapiServer(registered={"0215990000"})
        await solapi.start()
        env["FALLBACK_SOLAPI_BASE_URL"] = solapi.url
        env.setdefault("FALLBACK_SOLAPI_API_KEY", solapi.api_key)
        env.setdefault("FALLBACK_SOLAPI_API_SECRET", solapi.api_secret)
        env.setdefault("FALLBACK_SOLAPI_WEBHOOK_SECRET", WEBHOOK_SIGNATURE)
        env.setdefault("FALLBACK_SOLAPI_RESULTS_POLL_SECONDS", "2")
        solapi.control(
            {
                "results": {"delay": RESULT_DELAY_S, "undelivered": [REFUSING]},
                "webhook": {
                    "url": f"http://127.0.0.1:{env['FALLBACK_HTTP_PORT']}/webhooks/solapi",
                    "secret": env["FALLBACK_SOLAPI_WEBHOOK_SECRET"],
                },
            }
        )
        print(f"local Solapi-compatible messages API on {solapi.url}, reporting results")
    env.setdefault("FALLBACK_AD_QUIET_HOURS", "")  # the demo shows an advertising fallback
    env.setdefault("FALLBACK_DELIVERY_RESULTS", "on")
    os.environ.update(env)
    settings = load_settings()
    process: subprocess.Popen[bytes] | None = None
    console_process: subprocess.Popen[bytes] | None = None
    password = secrets.token_urlsafe(12)
    if console:
        users = Path(scratch.name) / "console-users"
        add_user(str(users), "demo", Role.OPERATOR, password)
        env["FALLBACK_CONSOLE_USERS_FILE"] = str(users)
        env["FALLBACK_CONSOLE_INDEX_PATH"] = str(Path(scratch.name) / "console-index.sqlite")
        env.setdefault("FALLBACK_CONSOLE_PORT", "8081")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await create_topics(settings, partitions=3, replication=1)
        await _publish(
            settings,
            settings.channel_settings_topic,
            [(k, orjson.dumps(v) if v else None) for k, v in CHANNELS.items()],
        )
        await _publish(
            settings,
            settings.sender_numbers_topic,
            [(k, orjson.dumps(v)) for k, v in SENDER_NUMBERS.items()],
        )
        print("seeded channels sk-mybrand (enabled), sk-paused (disabled) and sender numbers")
        binary = Path(sys.executable).with_name("fallback-service")
        # Popen returns at once; the service runs beside this loop until it is stopped.
        # Its own session, so that Ctrl-C reaches only the demo, which then stops it first.
        process = subprocess.Popen(  # noqa: ASYNC220
            [str(binary), "run"], env=env, start_new_session=True
        )
        await _wait_ready(settings.http_port, process)
        print(f"service ready: http://127.0.0.1:{settings.http_port}/metrics")
        if console:
            console_process = subprocess.Popen(  # noqa: ASYNC220
                [str(binary), "console"], env=env, start_new_session=True
            )
            await _wait_healthy(int(env["FALLBACK_CONSOLE_PORT"]), console_process)
            print(
                f"console ready: http://127.0.0.1:{env['FALLBACK_CONSOLE_PORT']}/ "
                f"(user demo, password {password})"
            )
        watcher = asyncio.create_task(_watch(settings, stop))
        players = []
        if settings.delivery_results and not settings.delivers:
            players.append(asyncio.create_task(_play_sms_service(settings, stop)))
            print("playing the team's SMS service: it reports each SMS request's result")
        started = time.monotonic()
        await _publish(
            settings, settings.input_topic, [(f"sample-{name}", value) for name, value in SAMPLES]
        )
        print(f"published {len(SAMPLES)} sample failures: {', '.join(n for n, _ in SAMPLES)}")
        print("Ctrl-C stops the service and the broker.\n")
        await stop.wait()
        for task in (watcher, *players):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        print(f"\nstopping after {time.monotonic() - started:.0f}s")
        return 0
    finally:
        for running in (console_process, process):
            if running is not None and running.poll() is None:
                running.send_signal(signal.SIGTERM)
                try:
                    running.wait(15)
                except subprocess.TimeoutExpired:
                    running.kill()
        scratch.cleanup()
        if embedded is not None:
            embedded.stop()
        if api is not None:
            await api.stop()
        if solapi is not None:
            await solapi.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make run` (`--nhn-down` for `make run-failover`, `--console` for
    `make run-console`)."""
    args = sys.argv[1:] if argv is None else argv
    unknown = [a for a in args if a not in ("--nhn-down", "--console")]
    if unknown:
        print(
            f"usage: python -m service.dev.demo [--nhn-down] [--console] (not: {' '.join(unknown)})"
        )
        return 2
    return asyncio.run(demo(nhn_down="--nhn-down" in args, console="--console" in args))


if __name__ == "__main__":
    raise SystemExit(main())
