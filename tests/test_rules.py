"""§5: the decision order, body, title, type, limits and advertising rules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.models import (
    OUTCOME,
    RESULT_REASONS,
    SETTLEMENT_REASONS,
    SMS_REQUEST,
    ChannelSettings,
    MessageKind,
    Reason,
    Status,
    to_json,
)
from service.core.rules import (
    Decision,
    Limits,
    Policy,
    QuietHours,
    Registry,
    build_message,
    decide,
    split_ad,
)
from service.core.text import Charset, Unencodable, byte_length, in_ks_x_1001
from tests.factories import (
    NIGHT_KST,
    NOON_KST,
    REGISTRY,
    SEND_NO,
    UNSUBSCRIBE_NO,
    channel,
    event,
)

POLICY = Policy()
HOUR = timedelta(hours=1)


def run(
    ev: Any = None,
    ch: ChannelSettings | str | None = "default",
    *,
    already: bool = False,
    now: datetime = NOON_KST,
    policy: Policy = POLICY,
) -> Decision:
    return decide(
        ev if ev is not None else event(),
        channel() if ch == "default" else ch,  # type: ignore[arg-type]
        REGISTRY,
        already_requested=already,
        now=now,
        policy=policy,
    )


def ad(**params: Any) -> Any:
    rp = {"resendUnsubscribeNo": UNSUBSCRIBE_NO, **params.pop("resendParameter", {})}
    return event(isAd=True, messageType="FRIENDTALK", resendParameter=rp, **params)


# ---- one row per reason code -----------------------------------------------------------------

REASON_CASES: list[tuple[str, dict[str, Any], Status, Reason]] = [
    ("duplicate", {"already": True}, Status.SKIPPED, Reason.DUPLICATE),
    (
        "expired",
        {"ev": event(failedAt="2026-11-22T12:00:00+09:00"), "policy": Policy(max_age=HOUR)},
        Status.SKIPPED,
        Reason.EXPIRED,
    ),
    ("no channel", {"ch": None}, Status.SKIPPED, Reason.CHANNEL_NOT_CONFIGURED),
    ("disabled", {"ch": channel(enabled=False)}, Status.SKIPPED, Reason.FALLBACK_DISABLED),
    (
        "result code not listed",
        {"ch": channel(resultCodes=["3016"])},
        Status.SKIPPED,
        Reason.RESULT_CODE_EXCLUDED,
    ),
    (
        "isResend false",
        {"ev": event(resendParameter={"isResend": False})},
        Status.SKIPPED,
        Reason.RESEND_NOT_REQUESTED,
    ),
    (
        "recipient short",
        {"ev": event(recipientNo="010-123")},
        Status.REJECTED,
        Reason.RECIPIENT_NUMBER_INVALID,
    ),
    (
        "sender missing",
        {"ch": channel(sendNo=None)},
        Status.REJECTED,
        Reason.SENDER_NUMBER_MISSING,
    ),
    (
        "sender invalid",
        {"ch": channel(sendNo="02-15")},
        Status.REJECTED,
        Reason.SENDER_NUMBER_INVALID,
    ),
    (
        "sender unregistered",
        {"ch": channel(sendNo="02-1111-2222")},
        Status.REJECTED,
        Reason.SENDER_NUMBER_UNREGISTERED,
    ),
    (
        "sender blocked",
        {"ch": channel(sendNo="031-777-0000")},
        Status.REJECTED,
        Reason.SENDER_NUMBER_BLOCKED,
    ),
    (
        "080 missing",
        {"ev": event(isAd=True)},
        Status.REJECTED,
        Reason.UNSUBSCRIBE_NUMBER_MISSING,
    ),
    (
        "080 invalid",
        {"ev": ad(resendParameter={"resendUnsubscribeNo": "070-123-4567"})},
        Status.REJECTED,
        Reason.UNSUBSCRIBE_NUMBER_INVALID,
    ),
    ("quiet hours", {"ev": ad(), "now": NIGHT_KST}, Status.SKIPPED, Reason.AD_QUIET_HOURS),
    (
        "ad format",
        {"ev": ad(resendParameter={"resendContent": "할인 행사 안내"})},
        Status.REJECTED,
        Reason.AD_FORMAT_INVALID,
    ),
    (
        "unencodable",
        {"ev": event(content="축하합니다 🎉"), "policy": Policy(unencodable=Unencodable.REJECT)},
        Status.REJECTED,
        Reason.UNENCODABLE_CHARACTERS,
    ),
    ("empty body", {"ev": event(content=" \n\u200b ")}, Status.REJECTED, Reason.EMPTY_BODY),
    (
        "international lms",
        {"ev": event(countryCode="1", resendParameter={"resendType": "LMS"})},
        Status.REJECTED,
        Reason.INTERNATIONAL_LMS_UNSUPPORTED,
    ),
]


def test_every_reason_has_a_case() -> None:
    assert {case[3] for case in REASON_CASES} == set(Reason) - SETTLEMENT_REASONS - RESULT_REASONS


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [case[1:] for case in REASON_CASES],
    ids=[case[0] for case in REASON_CASES],
)
def test_reason(kwargs: dict[str, Any], status: Status, reason: Reason) -> None:
    decision = run(**kwargs)
    assert decision.outcome.status is status
    assert decision.outcome.reason is reason
    assert decision.request is None
    assert decision.outcome.type is None
    assert decision.outcome.bodyBytes is None


# ---- the order: the first rule that applies decides ------------------------------------------

ORDER_CASES: list[tuple[str, dict[str, Any], Reason]] = [
    ("duplicate before no channel", {"already": True, "ch": None}, Reason.DUPLICATE),
    (
        "disabled before isResend",
        {"ch": channel(enabled=False), "ev": event(resendParameter={"isResend": False})},
        Reason.FALLBACK_DISABLED,
    ),
    (
        "isResend before recipient",
        {"ev": event(recipientNo="x", resendParameter={"isResend": False})},
        Reason.RESEND_NOT_REQUESTED,
    ),
    (
        "recipient before sender",
        {"ev": event(recipientNo="1"), "ch": channel(sendNo=None)},
        Reason.RECIPIENT_NUMBER_INVALID,
    ),
    (
        "sender before advertising",
        {"ev": event(isAd=True), "ch": channel(sendNo=None)},
        Reason.SENDER_NUMBER_MISSING,
    ),
    (
        "080 before quiet hours",
        {"ev": event(isAd=True), "now": NIGHT_KST},
        Reason.UNSUBSCRIBE_NUMBER_MISSING,
    ),
    (
        "quiet hours before format",
        {"ev": ad(resendParameter={"resendContent": "no frame"}), "now": NIGHT_KST},
        Reason.AD_QUIET_HOURS,
    ),
    (
        "format before text",
        {
            "ev": ad(resendParameter={"resendContent": "🎉"}),
            "policy": Policy(unencodable=Unencodable.REJECT),
        },
        Reason.AD_FORMAT_INVALID,
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "reason"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES]
)
def test_decision_order(kwargs: dict[str, Any], reason: Reason) -> None:
    assert run(**kwargs).outcome.reason is reason


def test_is_resend_true_or_missing_proceeds() -> None:
    assert run(event(resendParameter={"isResend": True})).outcome.status is Status.REQUESTED
    assert run(event(resendParameter={})).outcome.status is Status.REQUESTED
    assert run(event(resendParameter=None)).outcome.status is Status.REQUESTED


# ---- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("010-1234-5678", "01012345678"),
        ("010 1234 5678", "01012345678"),
        ("010.1234.5678", "01012345678"),
        (" 01012345678 ", "01012345678"),
        ("12345678", "12345678"),  # 8 digits: shortest allowed
        ("1" * 20, "1" * 20),  # 20 digits: longest allowed
    ],
)
def test_recipient_number_normalised(raw: str, digits: str) -> None:
    decision = run(event(recipientNo=raw))
    assert decision.request is not None
    assert decision.request.recipientNo == digits


@pytest.mark.parametrize("raw", ["1234567", "1" * 21, "", "010-1234-abcd", "+82 10 1234 5678"])
def test_recipient_number_invalid(raw: str) -> None:
    assert run(event(recipientNo=raw)).outcome.reason is Reason.RECIPIENT_NUMBER_INVALID


@pytest.mark.parametrize(
    ("override", "channel_no", "expected"),
    [
        (None, "02-1599-0000", SEND_NO),
        ("1588-0000", "02-1599-0000", "15880000"),  # resendSendNo wins
        ("   ", "02-1599-0000", SEND_NO),  # a blank override is ignored
        ("", "02 1599 0000", SEND_NO),
    ],
)
def test_sender_number_choice(override: str | None, channel_no: str, expected: str) -> None:
    decision = run(event(resendParameter={"resendSendNo": override}), channel(sendNo=channel_no))
    assert decision.request is not None
    assert decision.request.sendNo == expected


@pytest.mark.parametrize("number", ["1234567", "1234567890123", "02-1599-000a"])
def test_sender_number_length(number: str) -> None:
    decision = run(ch=channel(sendNo=number), policy=Policy(registry=Registry.OFF))
    assert decision.outcome.reason is Reason.SENDER_NUMBER_INVALID


def test_registry_off_allows_any_valid_number() -> None:
    decision = run(ch=channel(sendNo="02-1111-2222"), policy=Policy(registry=Registry.OFF))
    assert decision.outcome.status is Status.REQUESTED
    blocked = run(ch=channel(sendNo="031-777-0000"), policy=Policy(registry=Registry.OFF))
    assert blocked.outcome.status is Status.REQUESTED


def test_invalid_resend_send_no_does_not_fall_back_to_channel() -> None:
    decision = run(event(resendParameter={"resendSendNo": "12"}))
    assert decision.outcome.reason is Reason.SENDER_NUMBER_INVALID


# ---- body (§5.3) -----------------------------------------------------------------------------

BUTTONS = [
    {"ordering": 2, "type": "WL", "name": "배송조회", "linkMo": "https://m.ex.kr/track"},
    {"ordering": 1, "type": "WL", "name": "주문상세", "linkMo": "https://m.ex.kr/order"},
    {"ordering": 3, "type": "AL", "name": "앱열기", "linkMo": "https://m.ex.kr/app"},
    {"ordering": 4, "type": "WL", "name": "PC만", "linkPc": "https://ex.kr"},
    {"ordering": 5, "type": "WL", "name": "빈링크", "linkMo": "  "},
]


def test_body_appends_web_links_in_ordering_order() -> None:
    decision = run(event(content="주문 완료", buttons=BUTTONS))
    assert decision.request is not None
    assert decision.request.body == (
        "주문 완료\n주문상세 - https://m.ex.kr/order\n배송조회 - https://m.ex.kr/track"
    )


def test_resend_content_replaces_content_and_buttons() -> None:
    decision = run(event(buttons=BUTTONS, resendParameter={"resendContent": "대체 문구"}))
    assert decision.request is not None
    assert decision.request.body == "대체 문구"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", None])
def test_blank_resend_content_is_ignored(blank: str | None) -> None:
    decision = run(event(content="원문", resendParameter={"resendContent": blank}))
    assert decision.request is not None
    assert decision.request.body == "원문"


def test_body_text_rules_apply() -> None:
    decision = run(event(content="가격\u00a0\u20a91,000\r\n문의\u2010상담 ♥\ufe0f 🎉"))
    assert decision.request is not None
    assert decision.request.body == "가격 ￦1,000\n문의-상담 ♥ ?"
    assert decision.request.replacedChars == 1
    assert decision.outcome.replacedChars == 1


def test_drop_policy_counts_dropped_clusters() -> None:
    decision = run(event(content="A🎉B👍🏽C🇰🇷"), policy=Policy(unencodable=Unencodable.DROP))
    assert decision.request is not None
    assert decision.request.body == "ABC"
    assert decision.request.replacedChars == 3


# ---- type and limits (§5.5, §5.6) ------------------------------------------------------------


def test_exactly_90_bytes_is_sms_and_91_is_lms() -> None:
    sms = run(event(content="가" * 44 + "ab"))
    lms = run(event(content="가" * 44 + "abc"))
    assert sms.request is not None and lms.request is not None
    assert (sms.request.type, sms.request.bodyBytes) == (MessageKind.SMS, 90)
    assert sms.request.title is None and sms.request.titleBytes is None
    assert (lms.request.type, lms.request.bodyBytes) == (MessageKind.LMS, 91)
    assert lms.request.truncated is False


def test_forced_sms_is_cut_without_splitting_a_syllable() -> None:
    decision = run(event(content="a" + "가" * 60, resendParameter={"resendType": "SMS"}))
    assert decision.request is not None
    assert decision.request.type is MessageKind.SMS
    assert decision.request.body == "a" + "가" * 44
    assert decision.request.bodyBytes == 89
    assert decision.request.truncated is True
    assert decision.outcome.truncated is True


def test_forced_lms_for_short_text() -> None:
    decision = run(event(content="짧은 글", resendParameter={"resendType": "lms"}))
    assert decision.request is not None
    assert decision.request.type is MessageKind.LMS
    assert decision.request.title == "@mybrand"
    assert decision.request.titleBytes == 8


def test_lms_over_limit_is_cut_and_trailing_space_removed() -> None:
    content = "가" * 999 + " " + "나" * 10
    decision = run(event(content=content))
    assert decision.request is not None
    assert decision.request.type is MessageKind.LMS
    assert decision.request.body == "가" * 999
    assert decision.request.bodyBytes == 1998
    assert decision.request.truncated is True


def test_custom_limits() -> None:
    limits = Limits(sms_max_bytes=10, lms_title_max_bytes=4, lms_max_bytes=20)
    decision = run(event(content="가나다라마바"), policy=Policy(limits=limits))
    assert decision.request is not None
    assert decision.request.type is MessageKind.LMS
    assert decision.request.title == "@myb"
    assert decision.request.body == "가나다라마바"


@pytest.mark.parametrize("country", ["1", "+1", "81", "855"])
def test_international_is_sms_only(country: str) -> None:
    decision = run(event(countryCode=country, content="가" * 60))
    assert decision.request is not None
    assert decision.request.type is MessageKind.SMS
    assert decision.request.bodyBytes == 90
    assert decision.request.truncated is True
    assert decision.request.countryCode == country.lstrip("+")


def test_korea_code_forms_are_domestic() -> None:
    for code in ("82", "+82", None, ""):
        decision = run(event(countryCode=code, content="가" * 60))
        assert decision.request is not None
        assert decision.request.type is MessageKind.LMS
        assert decision.request.countryCode == "82"


# ---- title (§5.4) ----------------------------------------------------------------------------

LONG = "첫 줄 제목\n" + "본문 " * 40


@pytest.mark.parametrize(
    ("resend_title", "channel_title", "plus_friend_id", "expected"),
    [
        ("재발송 제목", "채널 제목", "@mybrand", "재발송 제목"),
        ("  ", "채널 제목", "@mybrand", "채널 제목"),
        (None, "채널 제목", "@mybrand", "채널 제목"),
        (None, None, "@mybrand", "@mybrand"),
        (None, "  ", ..., "첫 줄 제목"),
        ("두 줄\n제목", None, None, "두 줄 제목"),
        # 40 bytes exactly after the cut, the next syllable would make 42
        (
            "아주 긴 제목이 사십 바이트를 넘어서 잘려야 합니다",
            None,
            None,
            "아주 긴 제목이 사십 바이트를 넘어서 잘려",
        ),
    ],
)
def test_title_sources(
    resend_title: str | None, channel_title: str | None, plus_friend_id: Any, expected: str
) -> None:
    ev = event(
        content=LONG, plusFriendId=plus_friend_id, resendParameter={"resendTitle": resend_title}
    )
    decision = run(ev, channel(title=channel_title))
    assert decision.request is not None
    assert decision.request.type is MessageKind.LMS
    assert decision.request.title == expected
    assert decision.request.titleBytes == byte_length(expected)
    assert decision.request.titleBytes <= 40


def test_title_from_first_non_blank_line() -> None:
    ev = event(content="\n   \n  안내 말씀  \n" + "가" * 60, plusFriendId=None)
    decision = run(ev)
    assert decision.request is not None
    assert decision.request.title == "안내 말씀"


def test_title_cut_marks_truncated() -> None:
    ev = event(content=LONG, resendParameter={"resendTitle": "가" * 30})
    decision = run(ev)
    assert decision.request is not None
    assert decision.request.title == "가" * 20
    assert decision.request.truncated is True


def test_title_text_rules_apply() -> None:
    ev = event(content=LONG, resendParameter={"resendTitle": "세일\u00a0🎉"})
    decision = run(ev)
    assert decision.request is not None
    assert decision.request.title == "세일 ?"
    assert decision.request.replacedChars == 1


def test_rejected_title_character() -> None:
    ev = event(content=LONG, resendParameter={"resendTitle": "세일 🎉"})
    decision = run(ev, policy=Policy(unencodable=Unencodable.REJECT))
    assert decision.outcome.reason is Reason.UNENCODABLE_CHARACTERS


# ---- advertising (§5.7) ----------------------------------------------------------------------


def test_ad_frame_added() -> None:
    decision = run(ad(content="주말 특가"))
    assert decision.request is not None
    assert decision.request.body == "(광고)주말 특가\n무료수신거부 0801234567"
    assert decision.request.ad is True
    assert decision.request.type is MessageKind.SMS


def test_ad_number_from_channel_and_digits_only() -> None:
    ev = event(isAd=True, content="특가")
    decision = run(ev, channel(unsubscribeNo="080-123-45678"))
    assert decision.request is not None
    assert decision.request.body.endswith("\n무료수신거부 08012345678")


@pytest.mark.parametrize("number", ["0801234567", "08012345678", "080-123-4567", "080 1234 5678"])
def test_ad_number_valid(number: str) -> None:
    ev = ad(resendParameter={"resendUnsubscribeNo": number})
    assert run(ev).outcome.status is Status.REQUESTED


@pytest.mark.parametrize("number", ["080123456", "080123456789", "0701234567", "080-abc-4567"])
def test_ad_number_invalid(number: str) -> None:
    ev = ad(resendParameter={"resendUnsubscribeNo": number})
    assert run(ev).outcome.reason is Reason.UNSUBSCRIBE_NUMBER_INVALID


def test_ad_type_counts_the_frame() -> None:
    # 60 bytes of body + 6 of prefix + 24 of tail = 90: SMS; one more byte: LMS.
    fits = run(ad(content="a" * 60))
    over = run(ad(content="a" * 61))
    assert fits.request is not None and over.request is not None
    assert (fits.request.type, fits.request.bodyBytes) == (MessageKind.SMS, 90)
    assert (over.request.type, over.request.bodyBytes) == (MessageKind.LMS, 91)


def test_ad_cut_keeps_frame_whole() -> None:
    ev = ad(content="할인 " * 40, resendParameter={"resendType": "SMS"})
    decision = run(ev)
    assert decision.request is not None
    body = decision.request.body
    assert body.startswith("(광고)할인")
    assert body.endswith("\n무료수신거부 0801234567")
    assert decision.request.bodyBytes <= 90
    assert decision.request.truncated is True
    middle = body[len("(광고)") : -len("\n무료수신거부 0801234567")]
    assert middle == middle.rstrip()


def test_ad_lms_cut_keeps_frame_whole() -> None:
    decision = run(ad(content="가" * 1100))
    assert decision.request is not None
    assert decision.request.type is MessageKind.LMS
    assert decision.request.bodyBytes == 2000 - 0  # middle fills the budget exactly
    assert decision.request.body.endswith("\n무료수신거부 0801234567")
    assert decision.request.body.startswith("(광고)가")


@pytest.mark.parametrize(
    "content",
    [
        "(광고)주말 특가\n무료수신거부 080-123-4567",
        "(광고) 주말 특가 [무료 수신거부]0801234567",  # NHN's own form
        "(광고)주말 특가\n무료거부 0801234567",
        "  (광고)주말 특가 무료수신거부: 080 1234 567".replace(":", ""),
    ],
)
def test_given_ad_content_accepted_unchanged(content: str) -> None:
    decision = run(ad(resendParameter={"resendContent": content}))
    assert decision.request is not None
    assert decision.request.body == content


@pytest.mark.parametrize(
    "content",
    [
        "주말 특가 무료수신거부 0801234567",  # no (광고) at the start
        "주말 (광고) 특가 무료수신거부 0801234567",
        "(광고)주말 특가",  # no opt-out
        "(광고)주말 특가 무료수신거부 0809999999",  # another number
        "(광고)주말 특가 수신거부 0801234567",
    ],
)
def test_given_ad_content_rejected(content: str) -> None:
    decision = run(ad(resendParameter={"resendContent": content}))
    assert decision.outcome.reason is Reason.AD_FORMAT_INVALID


def test_given_ad_content_cut_in_the_middle() -> None:
    content = "(광고) " + "특가상품 " * 30 + "\n[무료 수신거부]080-123-4567"
    decision = run(ad(resendParameter={"resendContent": content, "resendType": "SMS"}))
    assert decision.request is not None
    body = decision.request.body
    assert body.startswith("(광고) 특가상품")
    assert body.endswith("\n[무료 수신거부]080-123-4567")
    assert decision.request.bodyBytes <= 90
    assert decision.request.truncated is True


def test_split_ad_uses_last_opt_out_phrase() -> None:
    body = "(광고)무료거부 이벤트 안내\n무료 수신거부 0801234567"
    assert split_ad(body) == ("(광고)", "무료거부 이벤트 안내", "\n무료 수신거부 0801234567")


def test_ad_frame_that_cannot_fit_is_rejected() -> None:
    content = "(광고)짧음 무료수신거부 0801234567 " + "꼬리" * 50
    decision = run(ad(resendParameter={"resendContent": content, "resendType": "SMS"}))
    assert decision.outcome.reason is Reason.AD_FORMAT_INVALID


@pytest.mark.parametrize(
    ("hour", "minute", "quiet"),
    [(20, 59, False), (21, 0, True), (23, 59, True), (0, 0, True), (7, 59, True), (8, 0, False)],
)
def test_quiet_hours_boundaries(hour: int, minute: int, quiet: bool) -> None:
    # Seoul is UTC+9 all year.
    now = datetime(2026, 11, 22, (hour - 9) % 24, minute, tzinfo=UTC)
    reason = run(ad(), now=now).outcome.reason
    assert (reason is Reason.AD_QUIET_HOURS) is quiet


def test_quiet_hours_disabled_and_non_wrapping() -> None:
    assert run(ad(), now=NIGHT_KST, policy=Policy(quiet_hours=None)).outcome.reason is None
    day = Policy(quiet_hours=QuietHours(time(12), time(15)))
    assert run(ad(), now=NOON_KST, policy=day).outcome.reason is Reason.AD_QUIET_HOURS
    assert run(ad(), now=NIGHT_KST, policy=day).outcome.reason is None


def test_quiet_hours_do_not_apply_to_non_ads() -> None:
    assert run(event(), now=NIGHT_KST).outcome.status is Status.REQUESTED


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("21:00-08:00", QuietHours(time(21, 0), time(8, 0))),
        ("9:30 - 18:00", QuietHours(time(9, 30), time(18, 0))),
        ("  ", None),
        ("", None),
    ],
)
def test_quiet_hours_parse(spec: str, parsed: QuietHours | None) -> None:
    assert QuietHours.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["25:00-08:00", "21:00", "08:00-08:00", "21:00-08:60", "9pm-8am"])
def test_quiet_hours_parse_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"HH:MM|equal|must be|hour|minute"):
        QuietHours.parse(spec)


# ---- the request and the outcome (§6, §7) ----------------------------------------------------


def test_requested_outcome_and_request_fields() -> None:
    ev = event(
        requestId="REQ-9",
        recipientSeq=3,
        senderGroupingKey="sg",
        recipientGroupingKey="rg",
        statsId="st",
    )
    decision = run(ev)
    assert decision.request is not None
    request = orjson.loads(to_json(decision.request))
    assert request == {
        "fallbackId": "REQ-9:3",
        "type": "SMS",
        "sendNo": SEND_NO,
        "recipientNo": "01012345678",
        "countryCode": "82",
        "title": None,
        "body": "[마이브랜드] 인증번호 482913",
        "ad": False,
        "bodyBytes": 28,
        "titleBytes": None,
        "truncated": False,
        "replacedChars": 0,
        "senderGroupingKey": "sg",
        "recipientGroupingKey": "rg",
        "statsId": "st",
        "origin": {
            "requestId": "REQ-9",
            "recipientSeq": 3,
            "senderKey": "sk-mybrand",
            "templateCode": "T001",
            "resultCode": "3018",
        },
        "createdAt": "2026-11-22T14:00:00.000+09:00",
    }
    assert orjson.loads(to_json(decision.outcome)) == {
        "fallbackId": "REQ-9:3",
        "requestId": "REQ-9",
        "recipientSeq": 3,
        "senderKey": "sk-mybrand",
        "status": "REQUESTED",
        "reason": None,
        "type": "SMS",
        "bodyBytes": 28,
        "truncated": False,
        "replacedChars": 0,
        "processedAt": "2026-11-22T14:00:00.000+09:00",
    }


def test_pure_same_input_same_output() -> None:
    ev = event(content="같은 입력 🎉" * 20)
    first, second = run(ev), run(ev)
    assert first.outcome == second.outcome
    assert first.request == second.request


# ---- properties ------------------------------------------------------------------------------

unicode_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=400)


@given(
    content=unicode_text,
    title=st.one_of(st.none(), unicode_text),
    kind=st.sampled_from([None, "SMS", "LMS"]),
    is_ad=st.booleans(),
    country=st.sampled_from(["82", "1"]),
    unencodable=st.sampled_from(list(Unencodable)),
    charset=st.sampled_from(list(Charset)),
    ad_name=st.one_of(st.none(), unicode_text),
)
@settings(max_examples=300, deadline=None)
def test_requested_is_always_sendable(
    content: str,
    title: str | None,
    kind: str | None,
    is_ad: bool,
    country: str,
    unencodable: Unencodable,
    charset: Charset,
    ad_name: str | None,
) -> None:
    rp: dict[str, Any] = {"resendType": kind, "resendTitle": title}
    if is_ad:
        rp["resendUnsubscribeNo"] = UNSUBSCRIBE_NO
    ev = event(content=content, isAd=is_ad, countryCode=country, resendParameter=rp)
    policy = Policy(unencodable=unencodable, quiet_hours=None, charset=charset)
    decision = run(ev, channel(adName=ad_name), policy=policy)
    request = decision.request
    if request is None:
        assert decision.outcome.status is not Status.REQUESTED
        return
    limits = policy.limits
    assert request.bodyBytes == len(request.body.encode("cp949"))
    if request.type is MessageKind.SMS:
        assert request.title is None and request.titleBytes is None
        assert request.bodyBytes <= limits.sms_max_bytes
    else:
        assert request.title is not None
        assert request.titleBytes == len(request.title.encode("cp949"))
        assert 0 < request.titleBytes <= limits.lms_title_max_bytes
        assert request.bodyBytes <= limits.lms_max_bytes
        assert "\n" not in request.title
    assert request.body.strip()
    if is_ad:
        assert request.body.startswith("(광고)")
        assert request.body.endswith(f"\n무료수신거부 {UNSUBSCRIBE_NO}")
    if country != "82":
        assert request.type is MessageKind.SMS
    assert decision.outcome.bodyBytes == request.bodyBytes
    if charset is Charset.EUC_KR:
        # Everything EUC-KR (KS X 1001) carries, nothing else.
        assert in_ks_x_1001(request.body)
        assert request.title is None or in_ks_x_1001(request.title)


@given(content=unicode_text, limit=st.integers(min_value=1, max_value=200))
@settings(max_examples=200, deadline=None)
def test_build_message_never_grows_the_text(content: str, limit: int) -> None:
    result = build_message(content, limits=Limits(limit, 40, limit * 2))
    if isinstance(result, Reason):
        return
    assert len(result.body) <= len(result.uncut_body)
    assert result.uncut_body.startswith(result.body)


def test_outputs_validate_against_their_wire_models() -> None:
    decision = run(event(content="가" * 60))
    assert decision.request is not None
    assert SMS_REQUEST.validate_json(to_json(decision.request)) == decision.request
    assert OUTCOME.validate_json(to_json(decision.outcome)) == decision.outcome
