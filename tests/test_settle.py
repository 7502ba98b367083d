"""Settlement (§7): a provider's answer becomes SENT, or FAILED with its reason."""

from __future__ import annotations

import orjson
import pytest

from service.core.models import Reason, Status, to_json
from service.core.rules import decide
from service.core.settle import ProviderAnswer, counts_as_requested, settle
from tests.factories import NOON_KST, REGISTRY, channel, event

REQUESTED = decide(
    event(),
    channel(),
    REGISTRY,
    already_requested=False,
    now=NOON_KST,
    policy=__import__("service.core.rules", fromlist=["Policy"]).Policy(),
).outcome


@pytest.mark.parametrize(
    ("answer", "status", "reason", "counts"),
    [
        (ProviderAnswer("nhn", True, "REQ1", 0, "SUCCESS"), Status.SENT, None, True),
        (
            ProviderAnswer("nhn", False, None, -2019, "RecipientNo is invalid."),
            Status.FAILED,
            Reason.PROVIDER_REJECTED,
            False,
        ),
        (
            ProviderAnswer("nhn", None, None, None, "timed out", attempts=5),
            Status.FAILED,
            Reason.PROVIDER_UNAVAILABLE,
            False,
        ),
    ],
)
def test_settle(
    answer: ProviderAnswer, status: Status, reason: Reason | None, counts: bool
) -> None:
    settled = settle(REQUESTED, answer, "2026-11-22T14:00:01.000+09:00")
    assert (settled.status, settled.reason) == (status, reason)
    assert counts_as_requested(answer) is counts
    wire = orjson.loads(to_json(settled))
    assert wire["provider"] == {
        "name": "nhn",
        "requestId": answer.request_id,
        "resultCode": answer.result_code,
        "resultMessage": answer.result_message,
        "attempts": answer.attempts,
    }
    # Everything else is the REQUESTED outcome's, but the time of settlement.
    requested = orjson.loads(to_json(REQUESTED))
    for name in ("fallbackId", "requestId", "recipientSeq", "senderKey", "type", "bodyBytes"):
        assert wire[name] == requested[name]
    assert wire["processedAt"] == "2026-11-22T14:00:01.000+09:00"


def test_a_published_request_counts_as_requested() -> None:
    assert counts_as_requested(None)
