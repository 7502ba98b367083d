"""The console without a broker (§12): accounts, sessions, the brake on logins, the index, and
its HTTP surface over a fake of its Kafka seam: sessions, roles, CSRF, masking, headers."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from service.config import ConfigError, load_settings
from service.console.app import (
    COOKIE,
    SECURITY_HEADERS,
    Console,
    console_app,
    masked_bytes,
    masked_request,
)
from service.console.follow import Progress
from service.console.i18n import choose, words
from service.console.index import Batch, Index, Query, audit_row, dead_letter_fallback
from service.console.sessions import FREE_FAILURES, LONGEST_WAIT, LoginBrake, Sessions
from service.console.users import (
    Role,
    User,
    UsersFileError,
    add_user,
    hash_password,
    load_users,
    parse_users,
    verify_password,
    with_user,
)
from service.core.models import ChannelSettings, SenderNumberStatus
from tests.console_helpers import FakeOperations, add_dead_letter, csrf_of, fill, outcome

RECIPIENT = "01099998888"
T0 = 1_764_000_000_000  # ms


# Accounts


def test_a_password_verifies_against_its_hash_and_nothing_else() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsE")
    assert not verify_password("scrypt$garbage", "x")
    assert not verify_password("bcrypt$1$2$3$4$5", "x")
    assert hash_password("same") != hash_password("same")  # salted


def test_the_users_file_is_read_line_by_line_and_a_bad_line_is_named() -> None:
    good = hash_password("x" * 10)
    users = parse_users(f"# accounts\n\nana:operator:{good}\nbo:viewer:{good}\n")
    assert users["ana"].role is Role.OPERATOR and users["bo"].role is Role.VIEWER
    for text, problem in (
        ("ana:admin:" + good, "role 'admin'"),
        ("ana:" + good, "line 1"),
        ("a b:viewer:" + good, "not a user name"),
        ("ana:viewer:plain-text", "not an scrypt hash"),
    ):
        with pytest.raises(UsersFileError, match=problem):
            parse_users(text)


def test_with_user_replaces_the_line_of_that_name_and_keeps_the_others() -> None:
    text = "# mine\nana:viewer:scrypt$1$1$1$a$b\nbo:viewer:scrypt$1$1$1$c$d\n"
    after = with_user(text, User("ana", Role.OPERATOR, "scrypt$2$2$2$e$f"))
    assert after.splitlines() == [
        "# mine",
        "ana:operator:scrypt$2$2$2$e$f",
        "bo:viewer:scrypt$1$1$1$c$d",
    ]
    assert with_user("", User("cy", Role.VIEWER, "h")) == "cy:viewer:h\n"


def test_add_user_writes_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "users"
    add_user(str(path), "ana", Role.OPERATOR, "a long password")
    add_user(str(path), "ana", Role.VIEWER, "another password")
    users = load_users(str(path))
    assert list(users) == ["ana"] and users["ana"].role is Role.VIEWER
    assert verify_password(users["ana"].password_hash, "another password")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_console_without_users_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FALLBACK_CONSOLE_USERS_FILE"):
        load_settings().console()
    empty = tmp_path / "users"
    empty.write_text("# nobody yet\n")
    with pytest.raises(UsersFileError, match="no user"):
        load_users(str(empty))
    with pytest.raises(UsersFileError, match="cannot read"):
        load_users(str(tmp_path / "missing"))


# Sessions and the brake


def test_a_session_ends_after_the_idle_time_and_each_request_restarts_it() -> None:
    sessions = Sessions(idle=60)
    opened = sessions.open("ana", Role.OPERATOR, now=0)
    assert sessions.get(opened.token, now=59) is opened
    assert sessions.get(opened.token, now=118) is opened  # 59 s after the last request
    assert sessions.get(opened.token, now=179) is None
    assert sessions.get(opened.token, now=180) is None  # gone, not revived
    assert sessions.get(None, now=0) is None and sessions.get("forged", now=0) is None


def test_the_csrf_token_must_match_exactly() -> None:
    session = Sessions(idle=60).open("ana", Role.VIEWER, now=0)
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf[:-1])
    assert not session.may_write


def test_failed_logins_make_each_further_attempt_wait_longer() -> None:
    brake = LoginBrake()
    keys = ("user:ana", "address:10.0.0.1")
    waits = []
    for i in range(12):
        waits.append(brake.wait(keys, now=i))
        brake.failed(keys, now=i)
    assert waits[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert waits[FREE_FAILURES : FREE_FAILURES + 4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == LONGEST_WAIT
    # Another name from the same address waits too (a spray of names), and so does the name
    # from elsewhere (a spray of addresses).
    assert brake.wait(("user:bo", "address:10.0.0.1"), now=12) == LONGEST_WAIT
    assert brake.wait(("user:ana", "address:10.9.9.9"), now=12) == LONGEST_WAIT
    assert brake.wait(("user:ana", "address:10.0.0.1"), now=12 + 16 * 60) == 0.0  # forgotten
    brake.succeeded(keys)
    assert brake.wait(keys, now=13) == 0.0


def test_the_language_is_the_switch_then_the_browser_then_korean() -> None:
    assert choose("en-US,en;q=0.9", None) == "en"
    assert choose("fr-FR, ko;q=0.5", None) == "ko"
    assert choose("de", None) == "ko"
    assert choose("en", "ko") == "ko"
    assert choose(None, "xx") == "ko"
    assert set(words("ko")) == set(words("en"))


# The index


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    found = Index(str(tmp_path / "index.sqlite"), "events|dlq|audit")
    yield found
    found.close()


def test_a_fallback_row_shows_request_send_and_result_side_by_side(index: Index) -> None:
    fill(
        index,
        [
            (T0, outcome("R1:1", "REQUESTED")),
            (T0 + 10, outcome("R1:1", "SENT", provider={"name": "solapi", "resultCode": 0})),
            (T0 + 20, outcome("R1:1", "DELIVERED", delivery={"provider": "solapi"})),
            (T0 + 1, outcome("R1:2", "SKIPPED", reason="fallback_disabled")),
            (T0 + 2, outcome("R2:1", "REQUESTED")),
            (T0 + 3, outcome("R2:1", "FAILED", reason="provider_rejected")),
        ],
    )
    (row,) = index.search(Query(fallback_id="R1:1"), limit=10)
    assert (row.request_status, row.send_status, row.final_status) == (
        "REQUESTED",
        "SENT",
        "DELIVERED",
    )
    assert (row.status, row.provider, row.first_at, row.last_at) == (
        "DELIVERED",
        "solapi",
        T0,
        T0 + 20,
    )
    assert [r.fallback_id for r in index.search(Query(request_id="R1"), limit=10)] == [
        "R1:2",
        "R1:1",
    ]
    (failed,) = index.search(Query(status="FAILED"), limit=10)
    assert (failed.fallback_id, failed.reason) == ("R2:1", "provider_rejected")
    (skipped,) = index.search(Query(reason="fallback_disabled"), limit=10)
    assert skipped.fallback_id == "R1:2" and skipped.send_status is None
    _, outcomes = index.story("R1:1")
    assert [o["status"] for _, o in outcomes] == ["REQUESTED", "SENT", "DELIVERED"]


def test_a_read_again_changes_nothing(index: Index) -> None:
    events = [(T0, outcome("R1:1", "REQUESTED")), (T0 + 5, outcome("R1:1", "SENT"))]
    fill(index, events)
    fill(index, events)  # the same offsets, as after a crash before the position was kept
    assert index.counts()["outcomes"] == 2 and index.counts()["fallbacks"] == 1
    assert index.positions() == {("events", 0): 2}


def test_a_time_range_search_pages_newest_first_without_gaps(index: Index) -> None:
    # Many at the same millisecond: the cursor is (time, fallbackId), not the time alone.
    fill(
        index,
        [
            (T0 + i // 10, outcome(f"R{i:03}:1", "REQUESTED", senderKey=f"C{i % 2}"))
            for i in range(95)
        ],
    )
    seen: list[str] = []
    before = None
    while True:
        page = index.search(
            Query(since_ms=T0, until_ms=T0 + 100, sender_key="C1"), limit=10, before=before
        )
        if not page:
            break
        seen += [r.fallback_id for r in page]
        before = (page[-1].first_at, page[-1].fallback_id)
    expected = sorted(((T0 + i // 10, f"R{i:03}:1") for i in range(95) if i % 2 == 1), reverse=True)
    assert seen == [fid for _, fid in expected]
    assert index.search(Query(since_ms=T0 + 9, until_ms=T0 + 9), limit=100)[0].first_at == T0 + 9
    assert index.search(Query(until_ms=T0 - 1), limit=10) == []


def test_records_that_are_not_outcomes_are_skipped(index: Index) -> None:
    batch = Batch()
    for i, value in enumerate(
        [
            b"not json",
            b"[1]",
            b'{"fallbackId": 1}',
            b'{"fallbackId": "a:1", "status": "WHAT"}',
            None,
        ]
    ):
        batch.outcomes.append((0, i, T0, value))
    batch.positions[("events", 0)] = 5
    index.apply(batch)
    assert index.counts()["fallbacks"] == 0 and index.positions()[("events", 0)] == 5


def test_dead_letters_and_audit_records_are_indexed_and_found(index: Index) -> None:
    event = orjson.dumps({"requestId": "R9", "recipientSeq": 2, "recipientNo": RECIPIENT})
    add_dead_letter(index, 0, T0, event, error="invalid_event")
    add_dead_letter(index, 1, T0 + 5, b"{broken", key=b"R8:1", error="invalid_json")
    assert [d.fallback_id for d in index.dead_letters()] == ["R9:2", "R8:1"]
    assert [d.offset for d in index.dead_letters(error="invalid_json")] == [1]
    assert [d.offset for d in index.dead_letters(since_ms=T0 + 1)] == [1]
    assert index.dead_letters(fid="R9:2")[0].headers[2] == ("trace", b"t-1")
    assert dead_letter_fallback(None, b"garbage") is None
    row = audit_row(
        0,
        7,
        T0,
        orjson.dumps(
            {
                "actor": "ana",
                "via": "console",
                "table": "channels",
                "key": "C",
                "before": None,
                "after": {"enabled": False},
            }
        ),
    )
    assert row is not None
    batch = Batch(audit=[row], positions={("audit", 0): 8})
    index.apply(batch)
    (entry,) = index.audit(limit=10)
    assert (entry.actor, entry.via, entry.table, entry.after) == (
        "ana",
        "console",
        "channels",
        '{"enabled":false}',
    )
    assert audit_row(0, 8, T0, b"nope") is None


def test_an_index_of_other_topics_or_another_schema_is_rebuilt(tmp_path: Path) -> None:
    path = str(tmp_path / "index.sqlite")
    first = Index(path, "events|dlq|audit")
    assert first.rebuilt
    fill(first, [(T0, outcome("R1:1", "REQUESTED"))])
    first.close()
    again = Index(path, "events|dlq|audit")
    assert not again.rebuilt and again.counts()["fallbacks"] == 1
    again.close()
    other = Index(path, "other|dlq|audit")
    assert other.rebuilt and other.counts()["fallbacks"] == 0 and other.positions() == {}
    other.close()


def test_pruning_drops_what_is_past_retention(index: Index) -> None:
    fill(index, [(T0, outcome("OLD:1", "REQUESTED")), (T0 + 100, outcome("NEW:1", "REQUESTED"))])
    add_dead_letter(index, 0, T0, b"x")
    assert index.prune(T0 + 50) == 1
    assert [r.fallback_id for r in index.search(Query(), limit=10)] == ["NEW:1"]
    assert index.story("OLD:1") == (None, [])
    assert index.dead_letters() == []


# Masking


def test_masked_bytes_hide_the_digits_of_phone_numbers_byte_for_byte() -> None:
    raw = f'{{"recipientNo":"{RECIPIENT}","n":"010-1234-5678","seq":12}}'.encode()
    shown = masked_bytes(raw)
    assert len(shown) == len(raw)
    assert shown == b'{"recipientNo":"010****8888","n":"010-****-5678","seq":12}'
    assert masked_bytes(b"\xff\xfe" + RECIPIENT.encode()) == b"\xff\xfe010****8888"


def test_a_shown_request_has_its_recipient_masked_and_its_sender_number_kept() -> None:
    shown = masked_request(
        {
            "recipientNo": RECIPIENT,
            "sendNo": "0215990000",
            "body": f"call {RECIPIENT}",
            "origin": {"x": RECIPIENT},
        }
    )
    assert shown == {
        "recipientNo": "010****8888",
        "sendNo": "0215990000",
        "body": "call 010****8888",
        "origin": {"x": "010****8888"},
    }


# The HTTP surface


class _Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def users() -> dict[str, User]:
    good = hash_password("operator-password")
    return {
        "ana": User("ana", Role.OPERATOR, good),
        "bo": User("bo", Role.VIEWER, hash_password("viewer-password")),
    }


@pytest.fixture
def operations() -> FakeOperations:
    ops = FakeOperations()
    ops.channel_table["CHANNEL"] = ChannelSettings(enabled=True, sendNo="0215990000")
    ops.sendno_table["0215990000"] = SenderNumberStatus.ACTIVE
    ops.requests["R1:1"] = {
        "fallbackId": "R1:1",
        "recipientNo": RECIPIENT,
        "sendNo": "0215990000",
        "body": "hello",
    }
    return ops


@pytest.fixture
def console(index: Index, users: dict[str, User], operations: FakeOperations) -> Console:
    fill(
        index,
        [
            (T0, outcome("R1:1", "REQUESTED")),
            (
                T0 + 10,
                outcome(
                    "R1:1", "SENT", provider={"name": "nhn", "resultMessage": f"ok {RECIPIENT}"}
                ),
            ),
            (T0 + 20, outcome("R2:1", "SKIPPED", reason="fallback_disabled")),
            (T0 + 30, outcome("=HYPERLINK(1):1", "SKIPPED", reason="channel_not_configured")),
        ],
    )
    add_dead_letter(
        index, 0, T0, orjson.dumps({"requestId": "R3", "recipientSeq": 1, "recipientNo": RECIPIENT})
    )
    progress = Progress(ready=True)
    return Console(
        settings=load_settings(),
        users=users,
        sessions=Sessions(idle=600),
        index=index,
        operations=operations,
        progress=progress,
        clock=_Clock(),
        sleep=_Sleeps(),
    )


@pytest.fixture
def client(console: Console) -> TestClient:
    return TestClient(
        console_app(console), base_url="http://127.0.0.1:8081", follow_redirects=False
    )


def _login(client: TestClient, name: str = "ana", password: str = "operator-password") -> str:
    answer = client.post("/login", data={"username": name, "password": password})
    assert answer.status_code == 303, answer.text
    page = client.get("/channels")
    assert page.status_code == 200
    return csrf_of(page.text)


PAGES = [
    "/",
    "/channels",
    "/sender-numbers",
    "/fallbacks",
    "/fallbacks?requestId=R1",
    "/fallbacks/R1:1",
    "/fallbacks.csv",
    "/dead-letters",
    "/audit",
]
WRITES = [
    ("/channels/CHANNEL", {"enabled": "off"}),
    ("/channels", {"senderKey": "NEW", "enabled": "on"}),
    ("/channels/CHANNEL/delete", {}),
    ("/sender-numbers/0215990000", {"status": "BLOCKED"}),
    ("/sender-numbers", {"number": "0311234567", "status": "ACTIVE"}),
    ("/sender-numbers/0215990000/delete", {}),
    ("/dead-letters/replay", {"confirm": "yes"}),
]


def test_without_a_session_pages_send_to_login_and_writes_are_refused(
    client: TestClient, operations: FakeOperations
) -> None:
    assert client.get("/healthz").text == "ok"
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next="), path
        assert "R1" not in answer.text and RECIPIENT not in answer.text
    for path, form in WRITES:
        assert client.post(path, data=form).status_code == 403, path
    assert operations.writes == []


def test_logging_in_sets_a_strict_http_only_cookie_and_a_wrong_password_sets_none(
    client: TestClient,
) -> None:
    wrong = client.post("/login", data={"username": "ana", "password": "nope"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    unknown = client.post("/login", data={"username": "zed", "password": "nope"})
    assert unknown.status_code == 401 and "set-cookie" not in unknown.headers
    right = client.post(
        "/login", data={"username": "ana", "password": "operator-password", "next": "/audit"}
    )
    assert right.status_code == 303 and right.headers["location"] == "/audit"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert client.get("/audit").status_code == 200


def test_a_login_goes_back_only_to_a_page_of_the_console(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "javascript:x"):
        answer = client.post(
            "/login", data={"username": "ana", "password": "operator-password", "next": target}
        )
        assert answer.headers["location"] == "/fallbacks", target


def test_secure_cookies_when_served_over_https(console: Console) -> None:
    console.secure_cookies = True
    client = TestClient(console_app(console), base_url="https://console", follow_redirects=False)
    answer = client.post("/login", data={"username": "ana", "password": "operator-password"})
    assert "Secure" in answer.headers["set-cookie"]
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_failed_logins_are_slowed_and_logged(
    client: TestClient, console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps = console.sleep
    assert isinstance(sleeps, _Sleeps)
    for _ in range(FREE_FAILURES + 3):
        client.post("/login", data={"username": "ana", "password": "guess"})
    assert sleeps.waits == [1.0, 2.0, 4.0]
    assert "failed login for 'ana' from testclient (6 in a row)" in caplog.text
    # The right password still gets in, after its wait; then the count starts again.
    assert (
        client.post("/login", data={"username": "ana", "password": "operator-password"}).status_code
        == 303
    )
    assert sleeps.waits[-1] == 8.0


def test_a_viewer_reads_every_page_and_every_write_is_refused(
    client: TestClient, operations: FakeOperations
) -> None:
    token = _login(client, "bo", "viewer-password")
    for path in PAGES:
        assert client.get(path).status_code in (200, 303), path
    channels = client.get("/channels").text
    assert "/channels/CHANNEL/delete" not in channels  # no write buttons shown
    for path, form in WRITES:
        assert client.post(path, data={**form, "csrf_token": token}).status_code == 403, path
    assert operations.writes == []


def test_a_write_without_or_with_a_wrong_csrf_token_is_refused(
    client: TestClient, operations: FakeOperations
) -> None:
    token = _login(client)
    for path, form in WRITES:
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "csrf_token": token + "x"}).status_code == 403
        assert client.post(path, data=form, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert operations.writes == []
    assert operations.channel_table["CHANNEL"].enabled
    # The header carries the token as well as the form field does.
    answer = client.post(
        "/channels/CHANNEL", data={"enabled": "off"}, headers={"X-CSRF-Token": token}
    )
    assert answer.status_code == 303
    assert operations.writes == [("channel", "CHANNEL", "ana/console")]


def test_an_idle_session_expires(client: TestClient, console: Console) -> None:
    token = _login(client)
    clock = console.clock
    assert isinstance(clock, _Clock)
    clock.now += 599
    assert client.get("/channels").status_code == 200
    clock.now += 601
    answer = client.get("/channels")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert (
        client.post("/channels/CHANNEL", data={"enabled": "off", "csrf_token": token}).status_code
        == 403
    )


def test_logging_out_ends_the_session(client: TestClient) -> None:
    token = _login(client)
    assert client.post("/logout", data={}).status_code == 403  # a forged logout
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/channels").status_code == 303


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    _login(client)
    for path in ["/login", "/healthz", *PAGES]:
        answer = client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (path, name)
        assert answer.headers["cache-control"] == "no-store", path
    csp = SECURITY_HEADERS["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert client.get("/static/console.css").headers.get("cache-control") != "no-store"


def test_no_page_has_an_inline_script_or_style(client: TestClient) -> None:
    _login(client)
    for path in ["/login", *PAGES[1:]]:
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert " style=" not in html and "<style" not in html and "onclick" not in html, path


def test_no_page_nor_csv_shows_a_recipient_number(client: TestClient) -> None:
    _login(client)
    for path in [*PAGES[1:], "/fallbacks/R3:1", "/dead-letters?error=invalid_event"]:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert RECIPIENT not in answer.text, path
        assert RECIPIENT.encode().hex() not in answer.text.replace(" ", ""), path
    detail = client.get("/fallbacks/R1:1").text
    assert "010****8888" in detail and "0215990000" in detail  # masked recipient, own sender
    letters = client.get("/dead-letters").text
    assert "010****8888" in letters


def test_the_csv_has_every_matching_row_masked_and_spreadsheet_safe(client: TestClient) -> None:
    _login(client)
    answer = client.get("/fallbacks.csv?status=SKIPPED")
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    assert answer.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [r["fallbackId"] for r in rows] == ["'=HYPERLINK(1):1", "R2:1"]
    assert rows[1]["reason"] == "fallback_disabled" and rows[1]["request"] == "SKIPPED"
    everything = client.get("/fallbacks.csv").content.decode("utf-8-sig")
    assert RECIPIENT not in everything and len(everything.splitlines()) == 4


def test_a_channel_is_changed_by_the_form_and_a_bad_field_is_shown_beside_it(
    client: TestClient, operations: FakeOperations
) -> None:
    token = _login(client)
    answer = client.post("/channels/CHANNEL", data={"sendNo": "12", "csrf_token": token})
    assert answer.status_code == 400
    assert 'id="error-sendNo"' in answer.text and 'aria-invalid="true"' in answer.text
    assert operations.writes == []
    answer = client.post(
        "/channels/CHANNEL",
        data={"title": "새 제목", "resultCodes": "3018, 3019", "csrf_token": token},
        follow_redirects=True,
    )
    assert answer.status_code == 200
    changed = operations.channel_table["CHANNEL"]
    assert (changed.title, changed.resultCodes, changed.sendNo, changed.enabled) == (
        "새 제목",
        ("3018", "3019"),
        "0215990000",  # left out: left as it is
        True,
    )
    assert "저장했습니다" in answer.text or "Saved" in answer.text
    # Toggling off is the same write with one field.
    client.post("/channels/CHANNEL", data={"enabled": "off", "csrf_token": token})
    assert not operations.channel_table["CHANNEL"].enabled
    # A blank field clears it; a new channel comes from the form's sender key.
    client.post("/channels/CHANNEL", data={"title": "", "csrf_token": token})
    assert operations.channel_table["CHANNEL"].title is None
    client.post("/channels", data={"senderKey": "NEW", "enabled": "on", "csrf_token": token})
    assert operations.channel_table["NEW"].enabled
    assert [w[2] for w in operations.writes] == ["ana/console"] * 4


def test_sender_numbers_are_registered_blocked_and_deleted(
    client: TestClient, operations: FakeOperations
) -> None:
    token = _login(client)
    bad = client.post(
        "/sender-numbers", data={"number": "abc", "status": "ACTIVE", "csrf_token": token}
    )
    assert bad.status_code == 400 and 'id="error-number"' in bad.text
    client.post(
        "/sender-numbers", data={"number": "031-123-4567", "status": "ACTIVE", "csrf_token": token}
    )
    client.post("/sender-numbers/0215990000", data={"status": "BLOCKED", "csrf_token": token})
    client.post("/sender-numbers/0311234567/delete", data={"csrf_token": token})
    assert operations.sendno_table == {"0215990000": SenderNumberStatus.BLOCKED}
    page = client.get("/sender-numbers").text
    assert "BLOCKED" in page and "CHANNEL" in page  # which channel uses it


def test_a_replay_shows_its_preview_and_sends_only_when_confirmed(
    client: TestClient, operations: FakeOperations
) -> None:
    token = _login(client)
    preview = client.post(
        "/dead-letters/replay", data={"error": "invalid_event", "csrf_token": token}
    )
    assert preview.status_code == 200
    assert 'id="replay-count">1<' in preview.text and 'name="confirm" value="yes"' in preview.text
    assert operations.replayed == []
    none = client.post("/dead-letters/replay", data={"error": "oversized", "csrf_token": token})
    assert 'id="replay-count">0<' in none.text
    done = client.post(
        "/dead-letters/replay",
        data={"error": "invalid_event", "confirm": "yes", "csrf_token": token},
    )
    assert done.status_code == 303
    (letter,) = operations.replayed
    assert orjson.loads(letter.value or b"")["requestId"] == "R3"
    assert ("trace", b"t-1") in letter.headers
    assert operations.writes == [("replay", "1", "ana/console")]


def test_a_search_with_a_bad_time_says_which_field(client: TestClient) -> None:
    _login(client)
    answer = client.get("/fallbacks?from=yesterday")
    assert answer.status_code == 400 and 'id="error-from"' in answer.text
    assert client.get("/fallbacks.csv?to=soon").status_code == 400
    ok = client.get("/fallbacks?from=2020-01-01T00:00:00Z&to=2030-01-01T00:00:00%2B09:00")
    assert ok.status_code == 200 and "R2:1" in ok.text


def test_the_story_page_answers_did_the_customer_get_it(client: TestClient) -> None:
    _login(client)
    story = client.get("/fallbacks/R1:1").text
    assert "sent by nhn" in story and "REQUESTED" in story
    assert client.get("/fallbacks/NOPE:1").status_code == 404
    letter = client.get("/fallbacks/R3:1").text
    assert "dead-letter topic" in letter


def test_the_language_switch_is_remembered(client: TestClient) -> None:
    _login(client)
    assert "발송 조회" in client.get("/fallbacks").text
    switched = client.get("/lang?to=en&next=/audit")
    assert switched.headers["location"] == "/audit"
    assert "Send query" in client.get("/fallbacks").text
    assert client.get("/lang?to=en&next=https://evil").headers["location"] == "/fallbacks"


def test_a_user_added_while_the_console_runs_can_log_in(
    tmp_path: Path, console: Console, client: TestClient
) -> None:
    # Added before the first login too: the console compares with the file it started from.
    path = tmp_path / "users"
    add_user(str(path), "ana", Role.OPERATOR, "operator-password")
    console.users = load_users(str(path))
    console.users_file = str(path)
    _login(client)
    add_user(str(path), "cy", Role.VIEWER, "cy-password-1")
    assert (
        client.post("/login", data={"username": "cy", "password": "cy-password-1"}).status_code
        == 303
    )


# `fallback-service console add-user`


def _add_user(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    password: str,
    *argv: str,
) -> tuple[int, str]:
    from service.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    try:
        code = main(["console", "add-user", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_add_user_writes_the_users_file_from_standard_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users"
    monkeypatch.setenv("FALLBACK_CONSOLE_USERS_FILE", str(path))
    code, _ = _add_user(capsys, monkeypatch, "a long password", "ana", "--role", "operator")
    assert code == 0
    users = load_users(str(path))
    assert users["ana"].role is Role.OPERATOR
    assert verify_password(users["ana"].password_hash, "a long password")
    assert "a long password" not in path.read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["ana"],  # no role
        ["ana", "--role", "admin"],
        ["a:b", "--role", "viewer"],
        ["--role", "viewer"],
    ],
)
def test_add_user_with_bad_arguments_prints_usage_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    path = tmp_path / "users"
    monkeypatch.setenv("FALLBACK_CONSOLE_USERS_FILE", str(path))
    code, err = _add_user(capsys, monkeypatch, "a long password", *argv)
    assert code == 2 and "usage" in err.lower()
    assert not path.exists()


def test_add_user_refuses_a_short_password_or_no_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = _add_user(capsys, monkeypatch, "a long password", "ana", "--role", "viewer")
    assert code == 1 and "FALLBACK_CONSOLE_USERS_FILE" in err
    path = tmp_path / "users"
    monkeypatch.setenv("FALLBACK_CONSOLE_USERS_FILE", str(path))
    code, err = _add_user(capsys, monkeypatch, "short", "ana", "--role", "viewer")
    assert code == 1 and "at least 10" in err and not path.exists()


def test_the_console_settings_are_checked_and_named() -> None:
    with pytest.raises(ConfigError, match="FALLBACK_CONSOLE_PORT"):
        load_settings(console_port=70000)
    with pytest.raises(ConfigError, match="FALLBACK_CONSOLE_SECURE_COOKIES"):
        load_settings(console_secure_cookies="maybe")
    with pytest.raises(ConfigError, match="FALLBACK_CONSOLE_READ_BUDGET"):
        load_settings(console_read_budget=0)
    options = load_settings(console_users_file="/etc/users", console_session_minutes=30).console()
    assert (options.host, options.port) == ("127.0.0.1", 8081)  # loopback unless told
    assert options.session_idle_seconds == 1800 and options.read_budget == 20_000


def test_a_user_added_before_the_first_login_can_log_in(
    tmp_path: Path, index: Index, operations: FakeOperations
) -> None:
    path = tmp_path / "users"
    add_user(str(path), "ana", Role.OPERATOR, "operator-password")
    console = Console(
        settings=load_settings(),
        users=load_users(str(path)),
        users_file=str(path),
        sessions=Sessions(idle=600),
        index=index,
        operations=operations,
        progress=Progress(ready=True),
        sleep=_Sleeps(),
    )
    add_user(str(path), "cy", Role.VIEWER, "cy-password-1")
    client = TestClient(console_app(console), follow_redirects=False)
    answer = client.post("/login", data={"username": "cy", "password": "cy-password-1"})
    assert answer.status_code == 303
