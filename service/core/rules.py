"""The decision order and message building (contract §5). Pure: the clock is a parameter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

import regex

from service.core.models import (
    SKIP_REASONS,
    ChannelSettings,
    FailureEvent,
    MessageKind,
    Origin,
    Outcome,
    Reason,
    SenderNumberStatus,
    SmsRequest,
    Status,
)
from service.core.text import Charset, Unencodable, byte_length, cut, normalise, prepare

KST = ZoneInfo("Asia/Seoul")
KOREA = "82"
AD_PREFIX = "(광고)"
AD_OPT_OUT = "무료수신거부"


@dataclass(frozen=True, slots=True)
class Limits:
    """Byte limits of §5.6."""

    sms_max_bytes: int = 90
    lms_title_max_bytes: int = 40
    lms_max_bytes: int = 2000


class Registry(StrEnum):
    """FALLBACK_SENDNO_REGISTRY: whether sender numbers must be registered and ACTIVE."""

    ENFORCE = "enforce"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window in Asia/Seoul time, start inclusive, end exclusive; may wrap midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, spec: str) -> QuietHours | None:
        """Parse `HH:MM-HH:MM`; an empty spec disables quiet hours. Raises ValueError."""
        spec = spec.strip()
        if not spec:
            return None
        match = regex.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", spec)
        if not match:
            raise ValueError(f"expected HH:MM-HH:MM or empty, got {spec!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        try:
            start, end = time(h1, m1), time(h2, m2)
        except ValueError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
        if start == end:
            raise ValueError(f"{spec!r}: start and end are equal; use an empty value to disable")
        return cls(start, end)

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` (timezone-aware) falls inside the window in Korean time."""
        local = moment.astimezone(KST).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


_DURATION_PART = regex.compile(r"(\d+)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(spec: str) -> timedelta | None:
    """`15m`, `2h`, `1h30m`, `90s`, `1d` (FALLBACK_MAX_AGE); empty is None. Raises ValueError."""
    spec = spec.strip().lower()
    if not spec:
        return None
    if not regex.fullmatch(r"(?:\d+\s*(?:ms|s|m|h|d)\s*)+", spec):
        raise ValueError(f"expected a duration such as 15m, 2h or 1h30m, or empty; got {spec!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(spec))
    if seconds <= 0:
        raise ValueError(f"{spec!r} is no time at all; use an empty value to disable")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything configurable that the rules depend on."""

    limits: Limits = field(default_factory=Limits)
    unencodable: Unencodable = Unencodable.REPLACE
    registry: Registry = Registry.ENFORCE
    quiet_hours: QuietHours | None = field(
        default_factory=lambda: QuietHours(time(21, 0), time(8, 0))
    )
    charset: Charset = Charset.CP949
    max_age: timedelta | None = None  # None: fallbacks never expire


@dataclass(slots=True)
class Message:
    """An SMS or LMS exactly as it will be sent, and what preparation did to get there."""

    kind: MessageKind
    body: str
    title: str | None
    body_bytes: int
    title_bytes: int | None
    truncated: bool
    replaced: tuple[str, ...]
    uncut_body: str
    uncut_title: str | None


@dataclass(frozen=True, slots=True)
class AdFrame:
    """An advertising fallback: its 080 number, whether the body came framed already, and the
    sender's name the service puts after `(광고)` when it builds the frame."""

    unsubscribe_no: str
    given: bool
    name: str | None = None


@dataclass(slots=True)
class Decision:
    """The outcome of one failure event and, when REQUESTED, the SMS request to publish."""

    outcome: Outcome
    request: SmsRequest | None = None
    message: Message | None = None


_SEPARATORS = str.maketrans("", "", "-. \t\n\r\v\f\u00a0\u3000")


def phone_digits(raw: str) -> str | None:
    """A phone number without `-`, spaces and `.`; None when anything but digits remains."""
    if raw.isascii() and raw.isdigit():
        return raw
    # Three replaces beat one translate for the usual separators; translate catches the rest.
    digits = raw.replace("-", "").replace(" ", "").replace(".", "")
    if not (digits.isascii() and digits.isdigit()):
        digits = digits.translate(_SEPARATORS)
    return digits if digits.isascii() and digits.isdigit() else None


def sender_number(raw: str) -> str | None:
    """A sender number's digits when it is one (8-12 digits, §5.1 rule 6), else None."""
    digits = phone_digits(raw)
    return digits if digits is not None and 8 <= len(digits) <= 12 else None


_UNSUBSCRIBE = regex.compile(r"080\d{7,8}")


def unsubscribe_number(raw: str) -> str | None:
    """An 080 opt-out number's digits when it is one (080 and 7-8 more, §5.7), else None."""
    digits = phone_digits(raw)
    return digits if digits is not None and _UNSUBSCRIBE.fullmatch(digits) else None


# What the advertising format check ignores (§5.7), plus the selectors and joiners that
# preparation drops anyway.
_AD_IGNORED = r"[\s\-\[\]\u200c\u200d\ufe00-\ufe0f]"
_AD_IGNORED_RE = regex.compile(_AD_IGNORED)

# The prefix must be exactly `(광고)`, only white space before it (§5.7).
_AD_PREFIX_RE = regex.compile(r"^\s*\(광고\)")
_OPT_OUT_RE = regex.compile(r"\[?무\s*료\s*(?:수\s*신\s*)?거\s*부", flags=regex.REVERSE)


def ad_format_ok(content: str, unsubscribe_no: str) -> bool:
    """Whether a given advertising body starts with exactly `(광고)` and ends with the opt-out
    (`무료수신거부` or `무료거부` and the 080 number, nothing but white space after it).

    Inside the opt-out, spaces, `-`, `[` and `]` do not count, so NHN's own
    `[무료 수신거부]080-123-4567` passes.
    """
    if not _AD_PREFIX_RE.match(content):
        return False
    phrase = _OPT_OUT_RE.search(content)
    if phrase is None:
        return False
    tail = _AD_IGNORED_RE.sub("", content[phrase.start() :])
    return tail in (f"{AD_OPT_OUT}{unsubscribe_no}", f"무료거부{unsubscribe_no}")


def split_ad(body: str) -> tuple[str, str, str]:
    """Split a framed advertising body into prefix, middle (the part that may be cut) and tail."""
    prefix = _AD_PREFIX_RE.match(body)
    prefix_end = prefix.end() if prefix else 0
    phrase = _OPT_OUT_RE.search(body, prefix_end)
    if phrase is None:
        return body[:prefix_end], body[prefix_end:], ""
    tail_start = phrase.start()
    while tail_start > prefix_end and body[tail_start - 1].isspace():
        tail_start -= 1
    return body[:prefix_end], body[prefix_end:tail_start], body[tail_start:]


def compose_body(event: FailureEvent) -> str:
    """§5.3: resendContent, else content with its web-link buttons appended in `ordering` order."""
    given = event.resendParameter.resendContent
    if given is not None:
        return given
    if not event.buttons:
        return event.content
    links = sorted(
        (b for b in event.buttons if b.type == "WL" and b.linkMo and b.linkMo.strip()),
        key=lambda b: b.ordering if b.ordering is not None else 0,
    )
    return event.content + "".join(f"\n{b.name or ''} - {b.linkMo}" for b in links)


def _first_line(body: str) -> str:
    for line in body.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def build_message(
    body: str,
    *,
    titles: Sequence[str | None] = (),
    ad: AdFrame | None = None,
    requested: MessageKind | None = None,
    international: bool = False,
    limits: Limits = Limits(),
    unencodable: Unencodable = Unencodable.REPLACE,
    charset: Charset = Charset.CP949,
) -> Message | Reason:
    """§5.2-§5.7 for one body: prepare, frame, choose the type, cut, title. Or why it cannot."""
    prepared = prepare(body, unencodable, charset)
    replaced = prepared.unencodable
    if replaced and unencodable is Unencodable.REJECT:
        return Reason.UNENCODABLE_CHARACTERS
    text = prepared.text
    if not text.strip():
        return Reason.EMPTY_BODY

    if ad is None:
        prefix, middle, tail = "", text, ""
    elif ad.given:
        prefix, middle, tail = split_ad(text)
    else:
        prefix = AD_PREFIX
        if ad.name is not None:
            name = prepare(ad.name, unencodable, charset)
            if name.unencodable and unencodable is Unencodable.REJECT:
                return Reason.UNENCODABLE_CHARACTERS
            shown = name.text.replace("\n", " ").strip()
            if shown:
                # The sender's name belongs to the frame: never cut, counted in the type choice.
                prefix = f"{AD_PREFIX}{shown} "
                replaced += name.unencodable
        middle, tail = text, f"\n{AD_OPT_OUT} {ad.unsubscribe_no}"
    full = prefix + middle + tail

    if international and requested is MessageKind.LMS:
        return Reason.INTERNATIONAL_LMS_UNSUPPORTED
    full_bytes = prepared.bytes if ad is None else byte_length(full)
    if requested is not None:
        kind = requested
    elif international or full_bytes <= limits.sms_max_bytes:
        kind = MessageKind.SMS
    else:
        kind = MessageKind.LMS
    max_bytes = limits.sms_max_bytes if kind is MessageKind.SMS else limits.lms_max_bytes

    if full_bytes <= max_bytes:
        sent, sent_bytes = full, full_bytes
    else:
        if ad is None:
            sent = cut(full, max_bytes)
        else:
            budget = max_bytes - byte_length(prefix) - byte_length(tail)
            if budget < 0:
                # The frame alone does not fit: cutting it would drop the required opt-out.
                return Reason.AD_FORMAT_INVALID
            sent = prefix + cut(middle, budget) + tail
        if not sent.strip():
            return Reason.EMPTY_BODY
        sent_bytes = byte_length(sent)
    truncated = sent != full

    title = uncut_title = None
    title_bytes = None
    if kind is MessageKind.LMS:
        uncut_title = ""
        for candidate in titles:
            if candidate is None or not candidate.strip():
                continue
            prepared_title = prepare(candidate, unencodable, charset)
            if prepared_title.unencodable and unencodable is Unencodable.REJECT:
                return Reason.UNENCODABLE_CHARACTERS
            uncut_title = prepared_title.text.replace("\n", " ").strip()
            if uncut_title:
                replaced += prepared_title.unencodable
                break
        if not uncut_title:
            uncut_title = _first_line(sent)
        title = cut(uncut_title, limits.lms_title_max_bytes)
        title_bytes = byte_length(title)
        truncated = truncated or title != uncut_title

    return Message(
        kind=kind,
        body=sent,
        title=title,
        body_bytes=sent_bytes,
        title_bytes=title_bytes,
        truncated=truncated,
        replaced=replaced,
        uncut_body=full,
        uncut_title=uncut_title,
    )


@lru_cache(maxsize=8)
def timestamp(now: datetime) -> str:
    """RFC 3339 in Korean time with milliseconds, as every output carries it."""
    return now.astimezone(KST).isoformat(timespec="milliseconds")


def _outcome(
    fid: str,
    event: FailureEvent,
    status: Status,
    reason: Reason | None,
    now: str,
    msg: Message | None,
) -> Outcome:
    return Outcome(
        fallbackId=fid,
        requestId=event.requestId,
        recipientSeq=event.recipientSeq,
        senderKey=event.senderKey,
        status=status,
        reason=reason,
        type=msg.kind if msg else None,
        bodyBytes=msg.body_bytes if msg else None,
        truncated=msg.truncated if msg else False,
        replacedChars=len(msg.replaced) if msg else 0,
        processedAt=now,
    )


def _sender_check(
    raw: str | None, registry: Mapping[str, SenderNumberStatus], policy: Policy
) -> str | Reason:
    if raw is None:
        return Reason.SENDER_NUMBER_MISSING
    digits = sender_number(raw)
    if digits is None:
        return Reason.SENDER_NUMBER_INVALID
    if policy.registry is Registry.ENFORCE:
        status = registry.get(digits)
        if status is None:
            return Reason.SENDER_NUMBER_UNREGISTERED
        if status is SenderNumberStatus.BLOCKED:
            return Reason.SENDER_NUMBER_BLOCKED
    return digits


def _ad_check(
    event: FailureEvent, channel: ChannelSettings, now: datetime, policy: Policy
) -> AdFrame | Reason:
    params = event.resendParameter
    raw = params.resendUnsubscribeNo or channel.unsubscribeNo
    if raw is None:
        return Reason.UNSUBSCRIBE_NUMBER_MISSING
    digits = unsubscribe_number(raw)
    if digits is None:
        return Reason.UNSUBSCRIBE_NUMBER_INVALID
    if policy.quiet_hours is not None and policy.quiet_hours.contains(now):
        return Reason.AD_QUIET_HOURS
    given = params.resendContent
    if given is not None and not ad_format_ok(normalise(given), digits):
        return Reason.AD_FORMAT_INVALID
    return AdFrame(unsubscribe_no=digits, given=given is not None, name=channel.adName)


def failed_at(event: FailureEvent, received_ms: int | None) -> datetime | None:
    """When the failure happened: `failedAt` (a time without offset is Korean time), else the
    input record's timestamp (milliseconds since the epoch), else unknown."""
    if event.failedAt is not None:
        moment = datetime.fromisoformat(event.failedAt)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=KST)
    if received_ms is not None:
        return datetime.fromtimestamp(received_ms / 1000, UTC)
    return None


def expired(event: FailureEvent, received_ms: int | None, now: datetime, policy: Policy) -> bool:
    """§5.1 after rule 1: older than FALLBACK_MAX_AGE at processing time (exactly as old is not)."""
    if policy.max_age is None:
        return False
    moment = failed_at(event, received_ms)
    return moment is not None and now - moment > policy.max_age


def decide(
    event: FailureEvent,
    channel: ChannelSettings | None,
    sender_numbers: Mapping[str, SenderNumberStatus],
    *,
    already_requested: bool,
    now: datetime,
    policy: Policy,
    received_ms: int | None = None,
) -> Decision:
    """Apply the decision order of §5.1 to one well-formed failure event.

    `received_ms` is the input record's timestamp, the age of an event without `failedAt`.
    """
    stamp = timestamp(now)
    fid = event.fallback_id

    def stop(reason: Reason) -> Decision:
        status = Status.SKIPPED if reason in SKIP_REASONS else Status.REJECTED
        return Decision(_outcome(fid, event, status, reason, stamp, None))

    if already_requested:
        return stop(Reason.DUPLICATE)
    if policy.max_age is not None and expired(event, received_ms, now, policy):
        return stop(Reason.EXPIRED)
    if channel is None:
        return stop(Reason.CHANNEL_NOT_CONFIGURED)
    if not channel.enabled:
        return stop(Reason.FALLBACK_DISABLED)
    if channel.resultCodes and event.resultCode not in channel.resultCodes:
        return stop(Reason.RESULT_CODE_EXCLUDED)
    params = event.resendParameter
    if params.isResend is False:
        return stop(Reason.RESEND_NOT_REQUESTED)
    recipient = phone_digits(event.recipientNo)
    if recipient is None or not 8 <= len(recipient) <= 20:
        return stop(Reason.RECIPIENT_NUMBER_INVALID)
    send_no = _sender_check(params.resendSendNo or channel.sendNo, sender_numbers, policy)
    if isinstance(send_no, Reason):
        return stop(send_no)
    ad = None
    if event.isAd:
        checked = _ad_check(event, channel, now, policy)
        if isinstance(checked, Reason):
            return stop(checked)
        ad = checked

    message = build_message(
        compose_body(event),
        titles=(params.resendTitle, channel.title, event.plusFriendId),
        ad=ad,
        requested=params.resendType,
        international=event.countryCode != KOREA,
        limits=policy.limits,
        unencodable=policy.unencodable,
        charset=policy.charset,
    )
    if isinstance(message, Reason):
        return stop(message)

    request = SmsRequest(
        fallbackId=fid,
        type=message.kind,
        sendNo=send_no,
        recipientNo=recipient,
        countryCode=event.countryCode,
        title=message.title,
        body=message.body,
        ad=event.isAd,
        bodyBytes=message.body_bytes,
        titleBytes=message.title_bytes,
        truncated=message.truncated,
        replacedChars=len(message.replaced),
        senderGroupingKey=event.senderGroupingKey,
        recipientGroupingKey=event.recipientGroupingKey,
        statsId=event.statsId,
        origin=Origin(
            requestId=event.requestId,
            recipientSeq=event.recipientSeq,
            senderKey=event.senderKey,
            templateCode=event.templateCode,
            resultCode=event.resultCode,
        ),
        createdAt=stamp,
    )
    return Decision(_outcome(fid, event, Status.REQUESTED, None, stamp, message), request, message)
