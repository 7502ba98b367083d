"""What any SMS provider's answer can mean for a request (contract §10), and how long to wait
before asking again: shared by the nhn and solapi mappings (`service.core.nhn`,
`service.core.solapi`).

Pure: no HTTP, no clock (the time and the random draw are passed in).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from service.core.rules import KST


class Verdict(StrEnum):
    """What one answer of a provider means for the request."""

    ACCEPTED = "accepted"  # SENT
    REJECTED = "rejected"  # FAILED provider_rejected, never retried
    # Surely not taken (the call was not sent, or the provider said it took nothing): retried;
    # FAILED provider_unavailable when the budget is spent; free to fail over.
    TRANSIENT = "transient"
    # Perhaps taken (a timeout or a connection lost after the request was sent, an answer we
    # cannot read): never sent again before the provider is asked whether it took it.
    AMBIGUOUS = "ambiguous"
    ACCOUNT = "account"  # no message can get past: this provider is unavailable until it clears


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt's answer, classified. `retry_after` is the provider's own wait, in seconds;
    `request_id` the provider's id for the message it took (NHN's requestId, Solapi's
    messageId)."""

    verdict: Verdict
    result_code: int | None
    result_message: str
    request_id: str | None = None
    retry_after: float | None = None

    @property
    def label(self) -> str:
        """The answer as a metric label: the provider's result code, else the transport's cause."""
        if self.result_code is not None:
            return str(self.result_code)
        return self.result_message.split(":", 1)[0].strip().lower().replace(" ", "_")[:32]


# httpx's exceptions raised before a byte of the request left: the provider cannot have it.
NOT_SENT_ERRORS = frozenset(
    {"ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol"}
)


def transport_failure(error_name: str, *, timeout: bool) -> Answer:
    """No answer at all. `error_name` is the transport's exception class name. A connection
    that never opened is surely not taken; one lost or timed out after the request went out
    may have been (§10: such a request stays with its provider and is looked up)."""
    cause = f"{'timeout' if timeout else 'connection error'}: {error_name}"
    verdict = Verdict.TRANSIENT if error_name in NOT_SENT_ERRORS else Verdict.AMBIGUOUS
    return Answer(verdict, None, cause)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - now_epoch)


def backoff(attempt: int, base: float, cap: float, unit_random: float) -> float:
    """The wait before retry number `attempt` (1 = the first retry): full jitter, uniform in
    [0, min(cap, base·2^(attempt-1))]. `unit_random` is a draw from [0, 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(ceiling * unit_random)


def retry_wait(answer: Answer, attempt: int, base: float, cap: float, unit_random: float) -> float:
    """How long to wait after `answer` before the next attempt: the jittered backoff, but never
    less than what the provider asked for in `Retry-After`."""
    wait = backoff(attempt, base, cap, unit_random)
    if answer.retry_after is not None:
        wait = max(wait, answer.retry_after)
    return wait


class Lookup(StrEnum):
    """What a provider said when asked whether it took a request after an ambiguous attempt."""

    TAKEN = "taken"  # it has the message: SENT, never sent again
    NOT_TAKEN = "not_taken"  # it has no such message: safe to send again
    UNKNOWN = "unknown"  # the lookup itself got no answer: stays held, never resent blindly


@dataclass(frozen=True, slots=True)
class Found:
    """A lookup's answer; `request_id` names the message found (TAKEN)."""

    lookup: Lookup
    request_id: str | None = None
    detail: str = ""


def reported_at(value: object) -> str | None:
    """A provider's date as RFC 3339 in Korean time: NHN's `yyyy-MM-dd HH:mm:ss[.S]` (Korean
    time), Solapi's ISO 8601 with a zone; None when it is neither."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "T"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=KST)
    return moment.astimezone(KST).isoformat(timespec="milliseconds")
