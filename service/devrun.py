"""`make run`: show the conversion core on sample texts."""

from __future__ import annotations

from service.cli import main

SAMPLES: list[list[str]] = [
    ["[마이브랜드] 인증번호 482913 을 입력해 주세요."],
    ["주문하신 상품이 발송되었습니다 🎉 똠햏뷁 확인해 주세요 ♥️"],
    ["--ad", "--unsubscribe-no", "080-123-4567", "이번 주말 전 품목 20% 할인! " * 5],
]


def demo() -> int:
    for argv in SAMPLES:
        print(f"$ fallback-service preview {' '.join(repr(a) for a in argv)}")
        main(["preview", *argv])
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(demo())
