"""The console in a real browser (Debian's Chromium, driven by Playwright) against a real
broker with the service running as a process (§12): each task an operator does, and what the
service then does. With FALLBACK_TEST_SCREENSHOTS=1 (`make screenshots`) the pages are saved
to docs/console/ for the operations guide."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from service.console.users import Role, add_user
from service.core.models import DLQ_ERROR, DLQ_ERROR_DETAIL
from service.dev.broker import free_port
from service.ops.tables import CHANNELS, read_table
from tests import tools
from tests.factories import SEND_NO, SENDER_KEY, event_dict
from tests.kafka_helpers import Broker, Topics, prepare, producer, put, read_to_end, values
from tests.processes import service_process, wait_ready
from tests.waiting import eventually_sync

pytestmark = pytest.mark.broker

playwright_sync = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "console"
T = TypeVar("T")
RECIPIENT = "01087654321"
NEW_SEND_NO = "0312345678"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a Kafka helper beside the browser: Playwright's sync API keeps a loop running in
    this thread, so the helper gets a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class Stack:
    broker: Broker
    topics: Topics
    url: str
    browser: Any
    shots: Path


def _outcomes(stack: Stack) -> list[dict[str, Any]]:
    return values(_run(read_to_end(stack.broker.bootstrap, stack.topics.events)))


def _outcome_of(stack: Stack, fid: str, status: str, within: float = 30) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [o for o in _outcomes(stack) if o["fallbackId"] == fid and o["status"] == status]
        return bool(found)

    eventually_sync(arrived, within, f"{status} outcome of {fid}")
    return found[0]


def _send(stack: Stack, request_id: str, **fields: Any) -> None:
    value = event_dict(requestId=request_id, recipientNo=RECIPIENT, **fields)
    _run(put(stack.broker.bootstrap, stack.topics.input, [(f"{request_id}:1", value)]))


@pytest.fixture(scope="module")
def stack(tansu: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    executable = tools.chromium()
    directory = tmp_path_factory.mktemp("console")
    topics = Topics.fresh(tansu.overrides)
    _run(prepare(tansu.bootstrap, topics))
    users = directory / "users"
    add_user(str(users), "ana", Role.OPERATOR, "operator-password")
    add_user(str(users), "bo", Role.VIEWER, "viewer-password")
    service_port, console_port = free_port(), free_port()
    env = topics.env(
        tansu.bootstrap,
        FALLBACK_HTTP_PORT=str(service_port),
        FALLBACK_CONSOLE_PORT=str(console_port),
        FALLBACK_CONSOLE_USERS_FILE=str(users),
        FALLBACK_CONSOLE_INDEX_PATH=str(directory / "index.sqlite"),
    )
    shots = SHOTS if os.environ.get("FALLBACK_TEST_SCREENSHOTS") == "1" else directory / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    with (
        service_process(env, output=directory / "service.log") as service,
        service_process(
            env,
            str(Path(sys.executable).parent / "fallback-service"),
            "console",
            output=directory / "console.log",
        ) as console,
    ):
        wait_ready(service_port, service)
        url = f"http://127.0.0.1:{console_port}"

        def serving() -> bool:
            assert console.poll() is None, (directory / "console.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually_sync(serving, 30, "the console's /healthz")
        with playwright_sync.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            try:
                yield Stack(tansu, topics, url, browser, shots)
            finally:
                browser.close()
        for process in (service, console):
            process.terminate()
            assert process.wait(15) == 0, f"{process.args!r} did not stop cleanly"


@pytest.fixture
def page(stack: Stack) -> Iterator[Any]:
    context = stack.browser.new_context(
        locale="ko-KR", viewport={"width": 1360, "height": 860}, accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _login(stack: Stack, page: Any, name: str = "ana", password: str = "operator-password") -> None:
    page.goto(f"{stack.url}/fallbacks")
    assert "/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form.login button")
    page.wait_for_url(re.compile(r".*/fallbacks$"))


def _shoot(stack: Stack, page: Any, name: str) -> None:
    page.screenshot(path=str(stack.shots / f"{name}.png"), full_page=True)


def _search_until(stack: Stack, page: Any, query: str, text: str, within: float = 30) -> None:
    """Search until the results show `text` (the index follows the outcome topic)."""

    def shown() -> bool:
        page.goto(f"{stack.url}/fallbacks?{query}")
        return text in page.inner_text("#results")

    eventually_sync(shown, within, f"{text!r} in the results of ?{query}")


def test_log_in_and_a_wrong_password_stays_out(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.url}/channels")
    assert "/login" in page.url
    _shoot(stack, page, "login")
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", "wrong")
    page.click("form.login button")
    assert "사용자 또는 비밀번호가 맞지 않습니다" in page.inner_text("main")
    assert not [c for c in page.context.cookies() if c["name"] == "fallback_console"]
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", "operator-password")
    page.click("form.login button")
    page.wait_for_url(re.compile(r".*/channels$"))
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "fallback_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "ana" in page.inner_text("header")


def test_a_channel_turned_off_in_the_console_makes_the_service_skip(
    stack: Stack, page: Any
) -> None:
    _login(stack, page)
    page.goto(f"{stack.url}/channels")
    row = page.locator(f"#channel-{SENDER_KEY}")
    assert "사용" in row.inner_text()
    row.locator("button.toggle").click()
    page.wait_for_url(re.compile(r".*/channels$"))
    assert "사용 안 함" in page.locator(f"#channel-{SENDER_KEY}").inner_text()
    assert "저장했습니다" in page.inner_text("main")
    _send(stack, "OFF1")
    skipped = _outcome_of(stack, "OFF1:1", "SKIPPED")
    assert skipped["reason"] == "fallback_disabled"
    # And back on, through the edit form this time.
    page.goto(f"{stack.url}/channels?edit={SENDER_KEY}")
    page.select_option("#channel-form select[name=enabled]", "on")
    page.click("#channel-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/channels$"))
    assert "사용 안 함" not in page.locator(f"#channel-{SENDER_KEY}").inner_text()


def test_a_new_sender_number_is_registered_and_given_to_the_channel(
    stack: Stack, page: Any
) -> None:
    _login(stack, page)
    page.goto(f"{stack.url}/sender-numbers")
    page.fill("#sendno-form input[name=number]", "abc")
    page.click("#sendno-form button")
    assert page.locator("#error-number").is_visible()  # shown by the field, nothing written
    page.fill("#sendno-form input[name=number]", "031-234-5678")
    page.click("#sendno-form button")
    page.wait_for_url(re.compile(r".*/sender-numbers$"))
    assert "ACTIVE" in page.locator(f"#sendno-{NEW_SEND_NO}").inner_text()
    page.goto(f"{stack.url}/channels?edit={SENDER_KEY}")
    page.fill("#channel-form input[name=sendNo]", "12")
    page.click("#channel-form button[type=submit]")
    assert "8-12 digits" in page.inner_text("#error-sendNo")
    page.fill("#channel-form input[name=sendNo]", NEW_SEND_NO)
    page.click("#channel-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/channels$"))
    assert NEW_SEND_NO in page.locator(f"#channel-{SENDER_KEY}").inner_text()
    channels = _run(read_table(stack.topics.settings(stack.broker.bootstrap), CHANNELS))
    assert channels[SENDER_KEY].sendNo == NEW_SEND_NO
    page.goto(f"{stack.url}/sender-numbers")
    _shoot(stack, page, "sender-numbers")
    page.goto(f"{stack.url}/channels")
    _shoot(stack, page, "channels")


def test_a_fallback_is_found_by_request_id_and_its_story_opened(stack: Stack, page: Any) -> None:
    _login(stack, page)
    _send(stack, "FIND1")
    _outcome_of(stack, "FIND1:1", "REQUESTED")
    _search_until(stack, page, "requestId=FIND1", "FIND1:1")
    assert "REQUESTED" in page.inner_text("#results")
    _shoot(stack, page, "send-query")
    page.click("#results a")
    page.wait_for_url(re.compile(r".*/fallbacks/FIND1(:|%3A)1$"))
    story = page.inner_text("main")
    assert "REQUESTED" in story and "handed over" in story
    request = orjson.loads(page.inner_text("#request"))
    assert request["recipientNo"] == "010****4321" and request["sendNo"] == NEW_SEND_NO
    assert RECIPIENT not in page.content()
    _shoot(stack, page, "story")


def test_a_search_downloads_as_csv_with_its_rows_masked(stack: Stack, page: Any) -> None:
    _login(stack, page)
    for n in (1, 2, 3):
        _send(stack, f"CSV{n}", content=f"[마이브랜드] 고객 {RECIPIENT} 님")
    _search_until(stack, page, f"senderKey={SENDER_KEY}", "CSV3:1")
    with page.expect_download() as downloading:
        page.click("#csv")
    text = Path(downloading.value.path()).read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    ids = {r["fallbackId"] for r in rows}
    assert {"CSV1:1", "CSV2:1", "CSV3:1", "FIND1:1", "OFF1:1"} <= ids
    assert all(r["senderKey"] == SENDER_KEY for r in rows)
    off = next(r for r in rows if r["fallbackId"] == "OFF1:1")
    assert (off["request"], off["reason"]) == ("SKIPPED", "fallback_disabled")
    assert RECIPIENT not in text and not re.search(r"\d{10,}", text.replace(SEND_NO, ""))


def test_a_dead_letter_is_replayed_after_its_channel_is_fixed(stack: Stack, page: Any) -> None:
    # A well-formed event for a channel nobody had configured, dead-lettered before the fix by
    # an earlier version that refused unknown channels (what is fixable by configuration).
    late = event_dict(requestId="LATE1", senderKey="sk-late", recipientNo=RECIPIENT)
    headers = [
        (DLQ_ERROR, b"invalid_event"),
        (DLQ_ERROR_DETAIL, f"senderKey sk-late unknown ({RECIPIENT})".encode()),
        ("trace-id", b"abc"),
    ]

    async def dead_letter() -> None:
        async with producer(stack.broker.bootstrap) as p:
            await p.send_and_wait(
                stack.topics.dlq, orjson.dumps(late), key=b"LATE1:1", headers=headers
            )

    _run(dead_letter())
    _login(stack, page)

    def listed() -> bool:
        page.goto(f"{stack.url}/dead-letters?error=invalid_event")
        return "LATE1:1" in page.inner_text("main")

    eventually_sync(listed, 30, "the dead letter on its page")
    page.click("article.letter summary")
    assert "010****4321" in page.inner_text("article.letter pre.text")
    assert RECIPIENT not in page.content()
    _shoot(stack, page, "dead-letters")
    # Fix the channel, then replay: preview first, nothing sent until confirmed.
    page.goto(f"{stack.url}/channels")
    page.fill("#channel-form input[name=senderKey]", "sk-late")
    page.select_option("#channel-form select[name=enabled]", "on")
    page.fill("#channel-form input[name=sendNo]", NEW_SEND_NO)
    page.click("#channel-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/channels$"))
    page.goto(f"{stack.url}/dead-letters?error=invalid_event")
    page.click("#replay button")
    assert page.inner_text("#replay-count") == "1"
    _shoot(stack, page, "replay-preview")
    assert not [o for o in _outcomes(stack) if o["fallbackId"] == "LATE1:1"]
    page.click("#confirm button")
    page.wait_for_url(re.compile(r".*/dead-letters.*"))
    assert "1건을 입력 토픽으로 다시 보냈습니다" in page.inner_text("main")
    requested = _outcome_of(stack, "LATE1:1", "REQUESTED")
    assert requested["senderKey"] == "sk-late"
    _search_until(stack, page, "requestId=LATE1", "REQUESTED")


def test_each_change_is_in_the_audit_with_its_user(stack: Stack, page: Any) -> None:
    _login(stack, page)
    wanted = {
        ("channels", SENDER_KEY),
        ("sender_numbers", NEW_SEND_NO),
        ("channels", "sk-late"),
        ("dead_letters", None),
    }

    def audited() -> bool:
        page.goto(f"{stack.url}/audit")
        rows = page.locator("#audit tbody tr").all_inner_texts()
        found = {
            (table, key)
            for table, key in wanted
            if any(
                "ana" in r and "console" in r and table in r and (key is None or key in r)
                for r in rows
            )
        }
        return found == wanted

    eventually_sync(audited, 30, "an audit entry of each change")
    text = page.inner_text("#audit")
    assert '"enabled":false' in text and '"enabled":true' in text  # the toggle's before/after
    _shoot(stack, page, "audit")
    records = values(_run(read_to_end(stack.broker.bootstrap, stack.topics.audit)))
    assert {r["via"] for r in records} == {"console"} and {r["actor"] for r in records} == {"ana"}


def test_a_viewer_sees_the_pages_and_cannot_change_anything(stack: Stack, page: Any) -> None:
    _login(stack, page, "bo", "viewer-password")
    page.goto(f"{stack.url}/channels")
    assert page.locator("button.toggle").count() == 0
    assert "조회 전용" in page.inner_text("main")
    before = len(values(_run(read_to_end(stack.broker.bootstrap, stack.topics.audit))))
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.content())
    assert token is not None  # the logout form's: a viewer's own token does not make it a writer
    answer = page.request.post(
        f"{stack.url}/channels/{SENDER_KEY}",
        form={"enabled": "off", "csrf_token": token.group(1)},
    )
    assert answer.status == 403
    after = len(values(_run(read_to_end(stack.broker.bootstrap, stack.topics.audit))))
    assert after == before
    page.click("#language")
    assert "Send query" in page.inner_text("header") or "Channels" in page.inner_text("header")


def test_the_console_refuses_to_start_without_users(stack: Stack, tmp_path: Path) -> None:
    env = stack.topics.env(stack.broker.bootstrap, FALLBACK_CONSOLE_PORT=str(free_port()))
    command = [str(Path(sys.executable).parent / "fallback-service"), "console"]
    full = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")} | env
    done = subprocess.run(command, env=full, capture_output=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2
    assert b"FALLBACK_CONSOLE_USERS_FILE" in done.stderr
    empty = tmp_path / "users"
    empty.write_text("# nobody\n")
    full["FALLBACK_CONSOLE_USERS_FILE"] = str(empty)
    done = subprocess.run(command, env=full, capture_output=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2 and b"no user" in done.stderr
