"""Micro-benchmark of the conversion core on a realistic mix, one core.

Reports conversions per second for `decide` on parsed events (the core) and for the whole CPU
path of one record (parse + decide + serialise both outputs). Target for the core: 50,000/s.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from service.core.models import (
    ChannelSettings,
    FailureEvent,
    SenderNumberStatus,
    parse_failure_event,
    to_json,
)
from service.core.rules import Policy, decide

TARGET = 50_000
NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def _mix(n: int, rng: random.Random) -> list[bytes]:
    notice = "[마이쇼핑] 홍길동님, 주문하신 상품(주문번호 2026112212345)이 발송되었습니다."
    long_body = (
        "[마이쇼핑] 회원 등급 변경 안내\n\n안녕하세요 홍길동 고객님.\n"
        + "이번 달 구매 실적에 따라 회원 등급이 골드로 변경되었습니다. 혜택을 확인하세요. " * 14
    )
    kinds: list[tuple[int, Callable[[int], str], dict[str, Any]]] = [
        (30, lambda i: f"[마이브랜드] 인증번호 {i % 1000000:06d} 를 입력해 주세요.", {}),
        (25, lambda i: notice[: 40 + i % 8], {}),  # around the 90-byte edge
        (15, lambda i: long_body, {}),  # LMS
        (10, lambda i: f"주문 완료 🎉 감사합니다 ♥️ 👍🏽 #{i}", {}),  # emoji
        (10, lambda i: f"똠햏뷁 고객님 {i}번 주문 확인 바랍니다.\u00a0문의\u20101588", {}),
        (5, lambda i: "이번 주 특가 " * 10, {"isAd": True, "messageType": "FRIENDTALK"}),
        (5, lambda i: notice, {"resendParameter": {"resendType": "SMS"}}),  # forced cut
    ]
    weights = [k[0] for k in kinds]
    out = []
    for i in range(n):
        _, body, extra = rng.choices(kinds, weights)[0]
        rp = {"resendUnsubscribeNo": "0801234567", **extra.get("resendParameter", {})}
        record = {
            "requestId": f"R{i}",
            "recipientSeq": 1,
            "senderKey": "sk-mybrand",
            "plusFriendId": "@mybrand",
            "recipientNo": "010-1234-5678",
            "content": body(i),
            "resultCode": "3018",
            "buttons": [{"ordering": 1, "type": "WL", "name": "조회", "linkMo": "https://m.ex.kr"}]
            if i % 4 == 0
            else [],
            **{k: v for k, v in extra.items() if k != "resendParameter"},
            "resendParameter": rp,
        }
        out.append(orjson.dumps(record))
    return out


def _rate(fn: object, items: list[object], repeats: int = 5) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)  # type: ignore[operator]
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    rng = random.Random(7)
    raw = _mix(20_000, rng)
    events = [parse_failure_event(r) for r in raw]
    assert all(isinstance(e, FailureEvent) for e in events)
    channel = ChannelSettings(enabled=True, sendNo="0215990000")
    registry = {"0215990000": SenderNumberStatus.ACTIVE}
    policy = Policy(quiet_hours=None)

    def core(ev: FailureEvent) -> object:
        return decide(ev, channel, registry, already_requested=False, now=NOW, policy=policy)

    def whole(value: bytes) -> object:
        ev = parse_failure_event(value)
        assert isinstance(ev, FailureEvent)
        d = core(ev)
        out = to_json(d.outcome)  # type: ignore[attr-defined]
        if d.request is not None:  # type: ignore[attr-defined]
            out += to_json(d.request)  # type: ignore[attr-defined]
        return out

    decisions = [core(e) for e in events]  # type: ignore[arg-type]
    kinds: dict[str, int] = {}
    for d in decisions:
        key = str(d.request.type) if d.request else str(d.outcome.reason)  # type: ignore[attr-defined]
        kinds[key] = kinds.get(key, 0) + 1
    core_rate = _rate(core, events)  # type: ignore[arg-type]
    whole_rate = _rate(whole, raw)  # type: ignore[arg-type]
    print(f"mix of {len(events)} events: {kinds}")
    print(f"core (decide):                      {core_rate:10,.0f} conversions/s on one core")
    print(f"parse + decide + serialise outputs: {whole_rate:10,.0f} records/s on one core")
    print(f"core vs target {TARGET:,}/s: {core_rate / TARGET:.2f}x")


if __name__ == "__main__":
    main()
