"""The realistic failure events every benchmark reads: one mix, generated the same way each run.

OTPs, notices around the 90-byte SMS edge, long LMS bodies, emoji, extended Hangul, web-link
buttons, a few advertising events (framed by the channel) and a few malformed records. The
channel and sender number they need are those `tests.kafka_helpers.seed` writes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

SENDER_KEY = "sk-mybrand"

_NOTICE = "[마이쇼핑] 홍길동님, 주문하신 상품(주문번호 2026112212345)이 발송되었습니다."
_LONG = (
    "[마이쇼핑] 회원 등급 변경 안내\n\n안녕하세요 홍길동 고객님.\n"
    + "이번 달 구매 실적에 따라 회원 등급이 골드로 변경되었습니다. 혜택을 확인하세요. " * 14
)
_LINK = [{"ordering": 1, "type": "WL", "name": "배송 조회", "linkMo": "https://m.ex.kr/o"}]

# (weight per 1,000, content for event i, extra fields)
_KINDS: list[tuple[int, Callable[[int], str], dict[str, Any]]] = [
    (300, lambda i: f"[마이브랜드] 인증번호 {i % 1000000:06d} 를 입력해 주세요.", {}),
    (240, lambda i: _NOTICE[: 40 + i % 8], {}),  # around the 90-byte edge
    (150, lambda i: _LONG, {}),  # LMS
    (100, lambda i: f"주문 완료 🎉 감사합니다 ♥️ 👍🏽 #{i}", {}),  # emoji
    (100, lambda i: f"똠햏뷁 고객님 {i}번 주문 확인 바랍니다.\u00a0문의\u20101588", {}),
    (60, lambda i: _NOTICE, {"buttons": _LINK}),  # a web link appended: LMS
    (40, lambda i: "이번 주 특가 " * 10, {"isAd": True, "messageType": "FRIENDTALK"}),
]
_MALFORMED_PER_1000 = 10
_MALFORMED = [b"{not json", b'{"requestId": "M", "recipientSeq": "one"}', b"[]"]


def events(count: int, *, prefix: str = "B", seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """`count` (key, value) records: keys are the fallbackIds (`{prefix}{i}:1`)."""
    rng = random.Random(seed)
    weights = [k[0] for k in _KINDS] + [_MALFORMED_PER_1000]
    choices = list(range(len(_KINDS) + 1))
    for i in range(count):
        key = f"{prefix}{i}:1".encode()
        kind = rng.choices(choices, weights)[0]
        if kind == len(_KINDS):
            yield key, _MALFORMED[i % len(_MALFORMED)]
            continue
        _, content, extra = _KINDS[kind]
        record: dict[str, Any] = {
            "requestId": f"{prefix}{i}",
            "recipientSeq": 1,
            "senderKey": SENDER_KEY,
            "plusFriendId": "@mybrand",
            "templateCode": "T001",
            "recipientNo": "010-1234-5678",
            "content": content(i),
            "resultCode": "3018",
            **extra,
        }
        yield key, orjson.dumps(record)


def is_malformed(value: bytes) -> bool:
    return value in _MALFORMED
