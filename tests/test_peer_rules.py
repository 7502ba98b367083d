"""What peers, carriers and the regulator expect (§3, §5.1, §5.2, §5.7): charset per provider,
the strict advertising frame with the sender's name, which failures fall back, stale fallbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.models import ChannelSettings, MessageKind, Reason, Status
from service.core.rules import Decision, Policy, decide, parse_duration
from service.core.text import Charset, Unencodable, in_ks_x_1001, prepare
from tests.factories import NOON_KST, REGISTRY, UNSUBSCRIBE_NO, channel, event

ANYTIME = Policy(quiet_hours=None)
EUC_KR = Policy(charset=Charset.EUC_KR, quiet_hours=None)
ALL_SYLLABLES = [chr(cp) for cp in range(0xAC00, 0xD7A4)]
EXTENDED = [ch for ch in ALL_SYLLABLES if not in_ks_x_1001(ch)]


def run(
    ev: Any = None,
    ch: ChannelSettings | None = None,
    *,
    policy: Policy = ANYTIME,
    now: datetime = NOON_KST,
    received_ms: int | None = None,
    already: bool = False,
) -> Decision:
    return decide(
        ev if ev is not None else event(),
        ch if ch is not None else channel(),
        REGISTRY,
        already_requested=already,
        now=now,
        policy=policy,
        received_ms=received_ms,
    )


def ad(content: str | None = None, **fields: Any) -> Any:
    rp: dict[str, Any] = {"resendUnsubscribeNo": UNSUBSCRIBE_NO}
    if content is not None:
        rp["resendContent"] = content
    rp.update(fields.pop("resendParameter", {}))
    return event(isAd=True, messageType="FRIENDTALK", resendParameter=rp, **fields)


# ---- charset (§5.2 step 5) -------------------------------------------------------------------


def test_exactly_the_8822_extended_syllables_are_outside_euc_kr() -> None:
    assert len(ALL_SYLLABLES) == 11_172
    assert len(EXTENDED) == 8_822
    assert {"똠", "햏", "뷁"} <= set(EXTENDED)
    # Every syllable, one call per policy: under euc-kr exactly the extended ones become '?'.
    text = "".join(ALL_SYLLABLES)
    euc = prepare(text, Unencodable.REPLACE, Charset.EUC_KR)
    assert list(euc.unencodable) == EXTENDED
    assert euc.text == "".join("?" if ch in set(EXTENDED) else ch for ch in ALL_SYLLABLES)
    assert prepare(text, Unencodable.REPLACE, Charset.CP949).unencodable == ()


def _class(ch: str) -> str:
    lead, trail = ch.encode("cp949")
    lead_range = "81-A0" if lead <= 0xA0 else "A1-C6"
    trail_range = "41-5A" if trail <= 0x5A else "61-7A" if trail <= 0x7A else "81-FE"
    return f"lead {lead_range}, trail {trail_range}"


EXTENDED_CLASSES: dict[str, str] = {}
for _ch in EXTENDED:
    EXTENDED_CLASSES.setdefault(_class(_ch), _ch)


def test_every_extended_class_is_sampled() -> None:
    # CP949 puts the extended syllables in these byte ranges (UHC), none of them KS X 1001.
    assert sorted(EXTENDED_CLASSES) == [
        "lead 81-A0, trail 41-5A",
        "lead 81-A0, trail 61-7A",
        "lead 81-A0, trail 81-FE",
        "lead A1-C6, trail 41-5A",
        "lead A1-C6, trail 61-7A",
        "lead A1-C6, trail 81-FE",
    ]


@pytest.mark.parametrize(("name", "syllable"), sorted(EXTENDED_CLASSES.items()))
@pytest.mark.parametrize(
    ("unencodable", "body", "status"),
    [
        (Unencodable.REPLACE, "쿠폰 ? 도착", Status.REQUESTED),
        (Unencodable.DROP, "쿠폰  도착", Status.REQUESTED),
        (Unencodable.REJECT, None, Status.REJECTED),
    ],
)
def test_extended_syllable_class_under_euc_kr(
    name: str, syllable: str, unencodable: Unencodable, body: str | None, status: Status
) -> None:
    text = f"쿠폰 {syllable} 도착"
    policy = Policy(charset=Charset.EUC_KR, unencodable=unencodable, quiet_hours=None)
    decision = run(event(content=text), policy=policy)
    assert decision.outcome.status is status
    if decision.request is None:
        assert decision.outcome.reason is Reason.UNENCODABLE_CHARACTERS
    else:
        assert decision.request.body == body
        assert decision.request.replacedChars == 1
    # The same text under CP949 goes as it is.
    same = run(event(content=text), policy=Policy(unencodable=unencodable, quiet_hours=None))
    assert same.request is not None and same.request.body == text


def test_question_marks_are_counted_in_body_and_title() -> None:
    ev = event(
        content="똠햏 게시판 " + "가" * 50,
        resendParameter={"resendType": "LMS", "resendTitle": "뷁 안내"},
    )
    decision = run(ev, policy=EUC_KR)
    assert decision.request is not None
    assert decision.request.body.startswith("?? 게시판")
    assert decision.request.title == "? 안내"
    assert decision.request.replacedChars == 3
    assert decision.outcome.replacedChars == 3


@pytest.mark.parametrize("kept", ["韓國", "★☆", "㈜", "①", "￦1,000", "\u212b", "ㄱㄴ"])
def test_ks_x_1001_symbols_and_hanja_are_carried_by_euc_kr(kept: str) -> None:
    decision = run(event(content=f"안내 {kept}"), policy=EUC_KR)
    assert decision.request is not None
    assert decision.request.body == f"안내 {kept}"
    assert decision.request.replacedChars == 0


def test_euc_kr_bytes_are_cp949_bytes() -> None:
    # KS X 1001 characters have the same two bytes in both, so the byte count is the same.
    decision = run(event(content="가" * 45), policy=EUC_KR)
    assert decision.request is not None
    assert decision.request.bodyBytes == 90
    assert decision.request.type is MessageKind.SMS


# ---- the strict advertising frame (§5.7) ----------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "(광 고)주말 특가 무료수신거부 0801234567",
        "(광-고)주말 특가 무료수신거부 0801234567",
        "( 광 고 )주말 특가 무료수신거부 0801234567",
        "[광고]주말 특가 무료수신거부 0801234567",
        "광고 주말 특가 무료수신거부 0801234567",
        "(광고 주말 특가 무료수신거부 0801234567",
        "주말 (광고) 특가 무료수신거부 0801234567",
        "x(광고)주말 특가 무료수신거부 0801234567",
    ],
)
def test_malformed_prefix_is_rejected(content: str) -> None:
    assert run(ad(content)).outcome.reason is Reason.AD_FORMAT_INVALID


@pytest.mark.parametrize(
    "content",
    [
        "(광고)주말 특가 무료수신거부 0801234567 오늘만!",  # text after the opt-out
        "(광고)무료수신거부 0801234567 주말 특가",  # the opt-out in the middle
        "(광고)주말 특가 무료수신거부 0801234567 080-999-9999",
        "(광고)주말 특가 무료수신거부 0809999999",  # another 080 number
        "(광고)주말 특가 수신거부 0801234567",  # not the phrase
        "(광고)주말 특가 0801234567",
        "(광고)주말 특가 무료수신거부",  # no number
    ],
)
def test_misplaced_or_wrong_opt_out_is_rejected(content: str) -> None:
    assert run(ad(content)).outcome.reason is Reason.AD_FORMAT_INVALID


@pytest.mark.parametrize(
    "content",
    [
        "(광고)주말 특가\n무료수신거부 0801234567",
        "(광고) 주말 특가 무료수신거부 080-123-4567",
        "  (광고)주말 특가 무료거부 0801234567  \n",
        "(광고)주말 특가\n[무료 수신거부]080-123-4567",  # NHN's own form
        "(광고)주말 특가 무료 수신 거부 080 123 4567",
    ],
)
def test_accepted_frames(content: str) -> None:
    decision = run(ad(content))
    assert decision.outcome.status is Status.REQUESTED, decision.outcome.reason
    assert decision.request is not None and decision.request.ad


# ---- the sender's name (§3, §5.7) -----------------------------------------------------------


def test_ad_name_goes_after_the_prefix() -> None:
    decision = run(ad(), channel(adName="마이브랜드"))
    assert decision.request is not None
    assert decision.request.body == (
        f"(광고)마이브랜드 [마이브랜드] 인증번호 482913\n무료수신거부 {UNSUBSCRIBE_NO}"
    )


def test_ad_name_is_kept_whole_when_the_body_is_cut() -> None:
    ev = ad(content=None, resendParameter={"resendType": "SMS"})
    ev = ev.model_copy(update={"content": "특가상품 " * 30})
    decision = run(ev, channel(adName="마이브랜드"))
    assert decision.request is not None
    body = decision.request.body
    assert body.startswith("(광고)마이브랜드 특가상품")
    assert body.endswith(f"\n무료수신거부 {UNSUBSCRIBE_NO}")
    assert decision.request.bodyBytes <= 90 and decision.request.truncated


def _frame_bytes(name: str) -> int:
    return len(f"(광고){name} \n무료수신거부 {UNSUBSCRIBE_NO}".encode("cp949"))


@pytest.mark.parametrize(("extra", "kind"), [(0, MessageKind.SMS), (1, MessageKind.LMS)])
def test_ad_name_counts_in_the_type_choice_at_the_90_byte_edge(
    extra: int, kind: MessageKind
) -> None:
    room = 90 - _frame_bytes("마이브랜드")
    content = "가" * (room // 2) + "a" * (room % 2 + extra)
    ev = ad(content=None).model_copy(update={"content": content})
    decision = run(ev, channel(adName="마이브랜드"))
    assert decision.request is not None
    assert decision.request.type is kind
    assert decision.request.bodyBytes == 90 + extra
    assert not decision.request.truncated
    # Without the name the same body is a short SMS.
    plain = run(ev)
    assert plain.request is not None and plain.request.type is MessageKind.SMS


def test_ad_name_follows_the_text_rules() -> None:
    ch = channel(adName=" 마이\n브랜드 🎉 ")
    decision = run(ad(), ch)
    assert decision.request is not None
    assert decision.request.body.startswith("(광고)마이 브랜드 ? [마이브랜드]")
    assert decision.request.replacedChars == 1
    rejected = run(ad(), ch, policy=Policy(unencodable=Unencodable.REJECT, quiet_hours=None))
    assert rejected.outcome.reason is Reason.UNENCODABLE_CHARACTERS


def test_ad_name_is_not_added_to_a_given_frame_nor_to_non_ads() -> None:
    given = "(광고)주말 특가\n무료수신거부 0801234567"
    decision = run(ad(given), channel(adName="마이브랜드"))
    assert decision.request is not None and decision.request.body == given
    plain = run(event(), channel(adName="마이브랜드"))
    assert plain.request is not None and "마이브랜드 [" not in plain.request.body


# ---- which failures fall back (§3, §5.1 rule 3) ---------------------------------------------


@pytest.mark.parametrize(
    ("codes", "result_code", "reason"),
    [
        (None, "3018", None),  # absent: every failure
        ([], "3018", None),  # empty: every failure
        (["3018", "3016"], "3018", None),
        (["3016"], "3018", Reason.RESULT_CODE_EXCLUDED),
        (["3016", "3015"], "3018", Reason.RESULT_CODE_EXCLUDED),
        (["3018 "], "3018", Reason.RESULT_CODE_EXCLUDED),  # codes are compared exactly
    ],
)
def test_result_codes(codes: list[str] | None, result_code: str, reason: Reason | None) -> None:
    decision = run(event(resultCode=result_code), channel(resultCodes=codes))
    assert decision.outcome.reason is reason
    expected = Status.REQUESTED if reason is None else Status.SKIPPED
    assert decision.outcome.status is expected


def test_disabled_comes_before_result_codes() -> None:
    decision = run(event(), channel(enabled=False, resultCodes=["1"]))
    assert decision.outcome.reason is Reason.FALLBACK_DISABLED


# ---- stale fallbacks (§5.1, after rule 1) ---------------------------------------------------

FIFTEEN = Policy(max_age=timedelta(minutes=15), quiet_hours=None)
NOW_MS = int(NOON_KST.timestamp() * 1000)


@pytest.mark.parametrize(
    ("failed_at", "received_ms", "reason"),
    [
        # From failedAt: exactly 15 minutes is not older than 15 minutes; a millisecond more is.
        ("2026-11-22T13:45:00+09:00", None, None),
        ("2026-11-22T13:44:59.999+09:00", None, Reason.EXPIRED),
        ("2026-11-22T04:44:59Z", None, Reason.EXPIRED),
        ("2026-11-22T13:44:59", None, Reason.EXPIRED),  # no offset: Korean time
        ("2026-11-22T13:45:00", None, None),
        # From the record timestamp when there is no failedAt.
        (None, NOW_MS - 15 * 60_000, None),
        (None, NOW_MS - 15 * 60_000 - 1, Reason.EXPIRED),
        # failedAt wins over the record timestamp.
        ("2026-11-22T13:59:00+09:00", NOW_MS - 3_600_000, None),
        ("2026-11-22T12:00:00+09:00", NOW_MS, Reason.EXPIRED),
        # Neither: the age is unknown and nothing expires.
        (None, None, None),
    ],
)
def test_expired(failed_at: str | None, received_ms: int | None, reason: Reason | None) -> None:
    ev = event(failedAt=failed_at) if failed_at else event()
    decision = run(ev, policy=FIFTEEN, received_ms=received_ms)
    assert decision.outcome.reason is reason


def test_expired_after_duplicate_and_before_channel() -> None:
    old = event(failedAt="2026-11-22T00:00:00+09:00")
    assert run(old, policy=FIFTEEN, already=True).outcome.reason is Reason.DUPLICATE
    missing = decide(old, None, REGISTRY, already_requested=False, now=NOON_KST, policy=FIFTEEN)
    assert missing.outcome.reason is Reason.EXPIRED


def test_no_max_age_never_expires() -> None:
    ancient = event(failedAt="2020-01-01T00:00:00+09:00")
    assert run(ancient, received_ms=0).outcome.status is Status.REQUESTED


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("90s", 90),
        ("1d", 86400),
        (" 2H ", 7200),
        ("500ms", 0.5),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_duration(spec: str, seconds: float | None) -> None:
    parsed = parse_duration(spec)
    assert (parsed.total_seconds() if parsed else None) == seconds


@pytest.mark.parametrize("spec", ["15", "m", "15 minutes", "0m", "-5m", "1.5h", "1w"])
def test_parse_duration_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"duration|no time"):
        parse_duration(spec)


def test_now_is_the_processing_time_not_the_wall_clock() -> None:
    ev = event(failedAt="2026-11-22T13:50:00+09:00")
    later = datetime(2026, 11, 22, 5, 6, tzinfo=UTC)  # 14:06 KST: 16 minutes on
    assert run(ev, policy=FIFTEEN).outcome.reason is None
    assert run(ev, policy=FIFTEEN, now=later).outcome.reason is Reason.EXPIRED
