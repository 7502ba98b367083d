"""Settlement: a delivering sink's answer about one request becomes a SENT or FAILED outcome (§7).

Pure: the sink says what the provider answered, the caller passes the time; nothing here sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.models import Outcome, Reason, Status


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """What a delivering sink learned from its provider about one request.

    `accepted` is True when the provider took the message, False when it refused it (never
    retried), and None when no answer came within the retry budget.
    """

    name: str
    accepted: bool | None
    request_id: str | None = None
    result_code: int | None = None
    result_message: str = ""
    attempts: int = 1


@dataclass(slots=True)
class Provider:
    """The `provider` object of a SENT or FAILED outcome (§7)."""

    name: str
    requestId: str | None
    resultCode: int | None
    resultMessage: str
    attempts: int


@dataclass(slots=True)
class SettledOutcome(Outcome):
    """A SENT or FAILED outcome: the REQUESTED one's fields plus what the provider said."""

    provider: Provider


def settle(requested: Outcome, answer: ProviderAnswer, processed_at: str) -> SettledOutcome:
    """The second outcome of a delivered fallback (§7): SENT, or FAILED with why."""
    if answer.accepted:
        status, reason = Status.SENT, None
    elif answer.accepted is False:
        status, reason = Status.FAILED, Reason.PROVIDER_REJECTED
    else:
        status, reason = Status.FAILED, Reason.PROVIDER_UNAVAILABLE
    return SettledOutcome(
        fallbackId=requested.fallbackId,
        requestId=requested.requestId,
        recipientSeq=requested.recipientSeq,
        senderKey=requested.senderKey,
        status=status,
        reason=reason,
        type=requested.type,
        bodyBytes=requested.bodyBytes,
        truncated=requested.truncated,
        replacedChars=requested.replacedChars,
        processedAt=processed_at,
        provider=Provider(
            name=answer.name,
            requestId=answer.request_id,
            resultCode=answer.result_code,
            resultMessage=answer.result_message,
            attempts=answer.attempts,
        ),
    )


def counts_as_requested(answer: ProviderAnswer | None) -> bool:
    """Whether a fallback now counts for rule 1 of §5.1: published, or SENT by the provider.

    A FAILED one may be sent again by re-publishing its event once the cause is fixed (§10).
    """
    return answer is None or answer.accepted is True
