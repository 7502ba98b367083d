"""The command line: `preview` output and usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli import main


def preview(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["preview", *argv])
    return code, capsys.readouterr().out


def test_preview_short_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "[마이브랜드] 인증번호 482913")
    assert code == 0
    assert "type:       SMS" in out
    assert "body bytes: 28" in out
    assert out.rstrip().splitlines()[-2] == "[마이브랜드] 인증번호 482913"


def test_preview_reports_replacements_and_cuts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "--type", "SMS", "가격\u00a0🎉 " + "가" * 60)
    assert code == 0
    assert "U+00A0 NO-BREAK SPACE -> U+0020 SPACE" in out
    assert "replaced by '?': 🎉 (U+1F389)" in out
    assert "bytes removed from the body" in out


def test_preview_lms_title(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "--title", "주문 안내", "가" * 50)
    assert code == 0
    assert "type:       LMS" in out
    assert "title:      주문 안내  (9 bytes)" in out


def test_preview_ad(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "--ad", "--unsubscribe-no", "080-123-4567", "특가")
    assert code == 0
    assert "(광고)특가\n무료수신거부 0801234567" in out


def test_preview_reject_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "--unencodable", "reject", "축하 🎉")
    assert code == 1
    assert out.strip() == "REJECTED unencodable_characters"
    code, out = preview(capsys, "--ad", "--framed", "--unsubscribe-no", "0801234567", "특가")
    assert code == 1
    assert out.startswith("REJECTED ad_format_invalid")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["preview", "--type", "MMS", "x"],
        ["preview", "--ad", "x"],
        ["preview", "--framed", "x"],
        ["preview", "--unencodable", "maybe", "x"],
        ["preview", "--no-such-flag"],
    ],
)
def test_bad_arguments_print_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: fallback-service" in capsys.readouterr().err.lower()


def test_bad_configuration_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK_SMS_MAX_BYTES", "lots")
    assert main(["preview", "x"]) == 2
    assert "FALLBACK_SMS_MAX_BYTES" in capsys.readouterr().err


def test_console_script_reads_stdin() -> None:
    script = Path(sys.executable).with_name("fallback-service")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")}
    done = subprocess.run(
        [str(script), "preview"],
        input="안녕하세요\r\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "body bytes: 11" in done.stdout


def test_preview_refuses_what_the_service_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    # A 070 number is no opt-out number: the service says unsubscribe_number_invalid, and so
    # must the preview (it used to accept it).
    code, out = preview(capsys, "--ad", "--unsubscribe-no", "070-1234-5678", "특가")
    assert code == 1
    assert out.startswith("REJECTED unsubscribe_number_invalid")
    code, out = preview(capsys, "--international", "--type", "LMS", "hello")
    assert (code, out.strip()) == (1, "REJECTED international_lms_unsupported")
    code, out = preview(capsys, " \n ")
    assert (code, out.strip()) == (1, "REJECTED empty_body")


@pytest.mark.parametrize(
    ("argv", "fields"),
    [
        (["가" * 50], {"content": "가" * 50}),
        (["--type", "SMS", "가" * 60], {"content": "가" * 60, "resendType": "SMS"}),
        (
            ["--ad", "--unsubscribe-no", "080-123-4567", "주말 특가 " * 20],
            {"content": "주말 특가 " * 20, "isAd": True},
        ),
    ],
)
def test_preview_shows_the_body_the_service_sends(
    capsys: pytest.CaptureFixture[str], argv: list[str], fields: dict[str, Any]
) -> None:
    from service.core.rules import Policy, decide
    from tests.factories import NOON_KST, REGISTRY, UNSUBSCRIBE_NO, channel, event

    resend = {"resendType": fields.pop("resendType")} if "resendType" in fields else {}
    decision = decide(
        event(**fields, resendParameter=resend),
        channel(unsubscribeNo=UNSUBSCRIBE_NO),
        REGISTRY,
        already_requested=False,
        now=NOON_KST,
        policy=Policy(),
    )
    assert decision.request is not None
    code, out = preview(capsys, *argv)
    assert code == 0
    shown = out.split("----- as recipients will get it -----\n")[1].rsplit("\n-----", 1)[0]
    assert shown == decision.request.body
    assert f"body bytes: {decision.request.bodyBytes}" in out


def test_preview_of_a_text_the_service_would_dead_letter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = preview(capsys, "가" * 4001)
    assert code == 1
    assert out.startswith("REJECTED invalid_event: content:")


def test_preview_charset_shows_the_difference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(capsys, "똠방각하 뷁 안내")
    assert code == 0
    assert out.splitlines()[-2] == "똠방각하 뷁 안내"
    code, out = preview(capsys, "--charset", "euc-kr", "똠방각하 뷁 안내")
    assert code == 0
    assert "replaced by '?': 똠 (U+B620)" in out
    assert "replaced by '?': 뷁 (U+BDC1)" in out
    assert out.splitlines()[-2] == "?방각하 ? 안내"
    code, out = preview(capsys, "--charset", "EUC-KR", "--unencodable", "reject", "똠")
    assert (code, out.strip()) == (1, "REJECTED unencodable_characters")


def test_preview_ad_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = preview(
        capsys, "--ad", "--ad-name", "마이브랜드", "--unsubscribe-no", "080-123-4567", "특가"
    )
    assert code == 0
    assert "(광고)마이브랜드 특가\n무료수신거부 0801234567" in out


@pytest.mark.parametrize(
    "argv", [["preview", "--charset", "utf8", "x"], ["preview", "--ad-name", "n", "x"]]
)
def test_preview_refuses_bad_new_arguments(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: fallback-service" in capsys.readouterr().err.lower()
