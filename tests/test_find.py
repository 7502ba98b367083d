"""`find`'s answer to "did the customer get it?" from a fallback's story (§7, §11), pure."""

from __future__ import annotations

from typing import Any

import pytest

from service.ops.find import Story


def outcome(status: str, reason: str | None = None, **more: Any) -> dict[str, Any]:
    return {"fallbackId": "R1:1", "status": status, "reason": reason, **more}


DELIVERED = outcome(
    "DELIVERED",
    delivery={
        "provider": "nhn",
        "resultCode": "1000",
        "resultMessage": "성공",
        "telecom": "SKT",
        "reportedAt": "2026-11-22T14:00:05+09:00",
        "latencyMs": 4210,
    },
)


@pytest.mark.parametrize(
    ("outcomes", "answer"),
    [
        (
            [outcome("REQUESTED"), outcome("SENT"), DELIVERED],
            "DELIVERED at 2026-11-22T14:00:05+09:00, 4210 ms after the AlimTalk failure "
            "(nhn 1000 성공 SKT)",
        ),
        (
            [outcome("REQUESTED"), outcome("EXPIRED", "no_result", processedAt="T")],
            "EXPIRED: no result came by the deadline (T)",
        ),
        ([outcome("REQUESTED")], "handed over, no delivery result yet (or results are off)"),
        (
            [outcome("REQUESTED"), outcome("FAILED", "provider_rejected")],
            "not sent: the provider answered FAILED provider_rejected",
        ),
        (
            [
                outcome("REQUESTED"),
                outcome("FAILED", "provider_rejected", provider={"name": "solapi"}),
            ],
            "not sent: solapi answered FAILED provider_rejected",
        ),
        (
            [outcome("REQUESTED"), outcome("SENT", provider={"name": "solapi"})],
            "sent by solapi, no delivery result yet (or results are off)",
        ),
        ([outcome("SKIPPED", "duplicate")], "not sent: SKIPPED duplicate"),
    ],
)
def test_the_answer_is_the_final_outcome_or_where_the_story_stands(
    outcomes: list[dict[str, Any]], answer: str
) -> None:
    assert Story("R1:1", outcomes, [], []).answer() == answer


def test_the_first_final_outcome_is_the_one() -> None:
    later = outcome("UNDELIVERED", "undelivered")
    story = Story("R1:1", [outcome("REQUESTED"), DELIVERED, later], [], [])
    assert story.final is DELIVERED
    assert Story("R1:1", [outcome("REQUESTED")], [], []).final is None
