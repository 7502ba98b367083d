"""The operator's verbs on a real broker: channels, sendnos, topics, dlq, tail, find (and their
refusals: nothing is written when input is refused)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import orjson
import pytest

from service.cli import main
from service.dev.broker import free_port
from tests.factories import SEND_NO, event_dict
from tests.kafka_helpers import (
    Topics,
    create_topics,
    put,
    read,
    read_to_end,
    seed,
    values,
)
from tests.processes import BIN, service_process, start, until_metric, wait_ready

pytestmark = pytest.mark.broker


@pytest.fixture
def env(bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The operator's environment: the same FALLBACK_* variables as the service."""
    asyncio.run(create_topics(bootstrap, topics))
    variables = topics.env(bootstrap)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fallback-service" in err.lower()
    return err


def records(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(read_to_end(bootstrap, topic))


def test_channels(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    # Refusals first: nothing reaches the topic.
    code, _, err = cli(capsys, "channels", "put", "sk-a", "--send-no", SEND_NO)
    assert code == 1 and "--enabled or --disabled" in err
    code, _, err = cli(capsys, "channels", "put", "sk-a", "--enabled", "--send-no", "02-15")
    assert code == 1 and "sender number" in err
    code, _, err = cli(
        capsys, "channels", "put", "sk-a", "--enabled", "--unsubscribe-no", "070-123-4567"
    )
    assert code == 1 and "080" in err
    code, _, err = cli(
        capsys, "channels", "put", "sk-a", "--enabled", "--send-no", SEND_NO, "--strict"
    )
    assert code == 1 and "not registered" in err
    assert records(bootstrap, topics.channels) == []
    usage_error(capsys, "channels", "put")
    usage_error(capsys, "channels", "put", "sk-a", "--enabled", "--bogus")

    # A sender number that is not registered is a warning without --strict.
    code, out, err = cli(
        capsys,
        "channels",
        "put",
        "sk-a",
        "--enabled",
        "--send-no",
        "02-1599-0000",
        "--unsubscribe-no",
        "080-123-4567",
        "--result-codes",
        "3018, 3016",
    )
    assert code == 0 and "warning: sender number 0215990000 is not registered" in err
    code, out, _ = cli(capsys, "channels", "get", "sk-a", "--json")
    assert code == 0
    assert orjson.loads(out) == {
        "senderKey": "sk-a",
        "enabled": True,
        "sendNo": "0215990000",
        "title": None,
        "unsubscribeNo": "0801234567",
        "adName": None,
        "resultCodes": ["3018", "3016"],
    }
    # put merges with the current value; --replace does not.
    assert cli(capsys, "channels", "put", "sk-a", "--title", "안내", "--disabled")[0] == 0
    got = orjson.loads(cli(capsys, "channels", "get", "sk-a", "--json")[1])
    assert (got["enabled"], got["title"], got["sendNo"]) == (False, "안내", "0215990000")
    assert cli(capsys, "channels", "put", "sk-a", "--enabled", "--replace")[0] == 0
    got = orjson.loads(cli(capsys, "channels", "get", "sk-a", "--json")[1])
    assert (got["enabled"], got["sendNo"], got["resultCodes"]) == (True, None, None)
    assert cli(capsys, "channels", "put", "sk-b", "--disabled")[0] == 0
    code, out, _ = cli(capsys, "channels", "list")
    assert code == 0 and "sk-a" in out and "sk-b" in out and "2 channels" in out
    listed = orjson.loads(cli(capsys, "channels", "list", "--json")[1])
    assert [c["senderKey"] for c in listed] == ["sk-a", "sk-b"]

    code, _, err = cli(capsys, "channels", "get", "nope")
    assert code == 1 and "no channel" in err
    code, _, err = cli(capsys, "channels", "delete", "nope")
    assert code == 1 and "no channel" in err
    assert cli(capsys, "channels", "delete", "sk-b")[0] == 0
    assert [c["senderKey"] for c in orjson.loads(cli(capsys, "channels", "list", "--json")[1])] == [
        "sk-a"
    ]


def test_every_change_is_audited_and_a_change_of_nothing_writes_nothing(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    """§10: one audit record per change (actor, via, table, key, before, after); a put that
    changes nothing exits 0, says so, and writes neither a table record nor an audit record."""
    assert cli(capsys, "sendnos", "put", SEND_NO, "--status", "ACTIVE", "--actor", "kim")[0] == 0
    assert cli(capsys, "channels", "put", "sk-a", "--enabled", "--send-no", SEND_NO)[0] == 0
    code, out, _ = cli(capsys, "channels", "put", "sk-a")
    assert code == 0 and "nothing to change" in out
    code, out, _ = cli(capsys, "channels", "put", "sk-a", "--enabled", "--actor", "lee")
    assert code == 0 and "unchanged" in out and "nothing written" in out
    code, out, _ = cli(capsys, "sendnos", "put", SEND_NO, "--status", "active", "--json")
    assert code == 0 and orjson.loads(out)["changed"] is False
    assert len(records(bootstrap, topics.channels)) == 1
    assert len(records(bootstrap, topics.senders)) == 1
    assert cli(capsys, "channels", "put", "sk-a", "--disabled", "--actor", "park")[0] == 0
    assert cli(capsys, "channels", "delete", "sk-a", "--actor", "park")[0] == 0
    audit = records(bootstrap, topics.audit)
    assert [r.key for r in audit] == [SEND_NO.encode(), b"sk-a", b"sk-a", b"sk-a"]
    entries = [orjson.loads(r.value) for r in audit]
    for entry in entries:
        assert set(entry) == {"at", "actor", "via", "table", "key", "before", "after"}
        assert entry["via"] == "cli" and entry["at"].endswith("+09:00")
    shown = [(e["actor"], e["table"], e["before"], e["after"]) for e in entries]
    default = entries[1]["actor"]
    assert default  # the operating-system user when --actor is not given
    assert shown == [
        ("kim", "sender_numbers", None, {"status": "ACTIVE"}),
        (default, "channels", None, {"enabled": True, "sendNo": SEND_NO}),
        (
            "park",
            "channels",
            {"enabled": True, "sendNo": SEND_NO},
            {"enabled": False, "sendNo": SEND_NO},
        ),
        ("park", "channels", {"enabled": False, "sendNo": SEND_NO}, None),
    ]
    # A refused change writes no audit record either.
    assert cli(capsys, "channels", "put", "sk-b", "--enabled", "--send-no", "1")[0] == 1
    assert len(records(bootstrap, topics.audit)) == 4


def test_sendnos(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    usage_error(capsys, "sendnos", "put", "02-1599-0000", "--status", "MAYBE")
    usage_error(capsys, "sendnos", "put", "02-1599-0000")
    code, _, err = cli(capsys, "sendnos", "put", "02-15", "--status", "ACTIVE")
    assert code == 1 and "8-12 digits" in err
    assert records(bootstrap, topics.senders) == []

    code, out, _ = cli(capsys, "sendnos", "put", "02-1599-0000", "--status", "active", "--json")
    assert code == 0
    assert orjson.loads(out) == {"number": "0215990000", "status": "ACTIVE", "changed": True}
    assert cli(capsys, "sendnos", "put", "031.777.0000", "--status", "BLOCKED")[0] == 0
    written = records(bootstrap, topics.senders)
    assert sorted(r.key for r in written) == [b"0215990000", b"0317770000"]  # digits only
    listed = orjson.loads(cli(capsys, "sendnos", "list", "--json")[1])
    assert listed == [
        {"number": "0215990000", "status": "ACTIVE"},
        {"number": "0317770000", "status": "BLOCKED"},
    ]
    blocked = orjson.loads(cli(capsys, "sendnos", "list", "--status", "blocked", "--json")[1])
    assert [n["number"] for n in blocked] == ["0317770000"]
    assert cli(capsys, "sendnos", "delete", "031-777-0000")[0] == 0
    code, _, err = cli(capsys, "sendnos", "delete", "031-777-0000")
    assert code == 1 and "not registered" in err
    code, out, _ = cli(capsys, "sendnos", "list")
    assert "0215990000" in out and "0317770000" not in out and "1 sender numbers" in out


def test_topics_create_twice(
    capsys: pytest.CaptureFixture[str], bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = Topics.fresh()
    for name, value in fresh.env(bootstrap).items():
        monkeypatch.setenv(name, value)
    code, out, _ = cli(capsys, "topics", "create", "--partitions", "3", "--json")
    first = orjson.loads(out)
    assert code == 0 and len(first) == 10 and set(first.values()) == {"created"}
    assert fresh.results in first and fresh.audit in first
    assert f"group-{fresh.input}.dedupe" in first and f"group-{fresh.input}.repartition" in first
    code, out, _ = cli(capsys, "topics", "create", "--partitions", "3")
    assert code == 0
    assert out.count("exists") == 10 and "created" not in out
    usage_error(capsys, "topics", "create", "--partitions", "0")


def test_a_channel_put_applies_to_the_next_event(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    assert cli(capsys, "sendnos", "put", SEND_NO, "--status", "ACTIVE")[0] == 0
    assert cli(capsys, "channels", "put", "sk-mybrand", "--disabled", "--send-no", SEND_NO)[0] == 0
    port = free_port()
    with service_process({**env, "FALLBACK_HTTP_PORT": str(port)}) as p:
        wait_ready(port, p)
        asyncio.run(put(bootstrap, topics.input, [("R1:1", event_dict())]))
        first = values(asyncio.run(read(bootstrap, topics.events, 1)))
        assert first[0]["reason"] == "fallback_disabled"
        assert cli(capsys, "channels", "put", "sk-mybrand", "--enabled")[0] == 0
        # The service has the change once it has read the channel topic's second record.
        until_metric(port, 'fallback_table_records_total{table="channels"} 2.0')
        asyncio.run(put(bootstrap, topics.input, [("R1:2", event_dict(recipientSeq=2))]))
        # Outcomes are keyed by fallbackId over three partitions: no order between the two.
        outcomes = values(asyncio.run(read(bootstrap, topics.events, 2)))
    second = {o["fallbackId"]: o for o in outcomes}
    assert second["R1:2"]["status"] == "REQUESTED", outcomes


def _dead_letter(value: bytes, error: str, offset: int) -> tuple[bytes, bytes, list[Any]]:
    headers = [
        ("trace", b"t-9"),
        ("x-fallback-error", error.encode()),
        ("x-fallback-error-detail", b"recipientNo 010-9876-5432 was refused"),
        ("x-original-topic", b"in"),
        ("x-original-partition", b"0"),
        ("x-original-offset", str(offset).encode()),
    ]
    return b"DL1:1", value, headers


async def _write(bootstrap: str, topic: str, rows: list[tuple[bytes, bytes, list[Any]]]) -> None:
    from tests.kafka_helpers import producer

    async with producer(bootstrap) as p:
        for key, value, headers in rows:
            await p.send_and_wait(topic, value, key=key, headers=headers)


def test_dlq_list_and_replay_after_the_cause_is_fixed(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    # A dead letter an earlier version refused (its event is valid now), and real junk.
    fixed = orjson.dumps(event_dict(requestId="DL1", recipientNo="010-9876-5432"))
    asyncio.run(
        _write(
            bootstrap,
            topics.dlq,
            [_dead_letter(fixed, "invalid_event", 7), (b"junk", b"{not json", [])],
        )
    )
    usage_error(capsys, "dlq", "list", "--since", "yesterday-ish")
    usage_error(capsys, "dlq", "list", "--error", "bad_vibes")
    code, out, _ = cli(capsys, "dlq", "list")
    assert code == 0 and "2 dead letters" in out
    assert "010-9876-5432" not in out and "010-****-5432" in out  # numbers masked
    listed = orjson.loads(cli(capsys, "dlq", "list", "--error", "invalid_event", "--json")[1])
    assert len(listed) == 1 and listed[0]["error"] == "invalid_event"
    assert "9876" not in listed[0]["detail"]
    code, out, _ = cli(capsys, "dlq", "list", "--since", "1h", "--until", "2000-01-01")
    assert "0 dead letters" in out

    # A dry run sends nothing.
    code, out, _ = cli(capsys, "dlq", "replay", "--error", "invalid_event", "--dry-run")
    assert code == 0 and "1 dead letters would send" in out
    assert records(bootstrap, topics.input) == []

    asyncio.run(seed(bootstrap, topics))
    port = free_port()
    with service_process({**env, "FALLBACK_HTTP_PORT": str(port)}) as p:
        wait_ready(port, p)
        code, out, _ = cli(capsys, "dlq", "replay", "--error", "invalid_event", "--json")
        replayed = orjson.loads(out)
        assert code == 0 and replayed["sent"] == 1
        assert replayed["records"][0]["headers"] == ["trace"]
        first = values(asyncio.run(read(bootstrap, topics.events, 1)))
        assert [(o["fallbackId"], o["status"]) for o in first] == [("DL1:1", "REQUESTED")]
        # Replaying again sends no second SMS.
        assert cli(capsys, "dlq", "replay", "--error", "invalid_event")[0] == 0
        second = values(asyncio.run(read(bootstrap, topics.events, 2)))
    assert [(o["status"], o["reason"]) for o in second] == [
        ("REQUESTED", None),
        ("SKIPPED", "duplicate"),
    ]
    requests = records(bootstrap, topics.output)
    assert [r.key for r in requests] == [b"DL1:1"]
    replays = records(bootstrap, topics.input)
    assert all(dict(r.headers) == {"trace": b"t-9"} for r in replays)
    # Each replay is audited (§10), by the CLI's actor.
    audits = [orjson.loads(r.value or b"") for r in records(bootstrap, topics.audit)]
    assert [(a["table"], a["via"], a["after"]) for a in audits] == [
        ("dead_letters", "cli", {"replayedTo": topics.input})
    ] * 2
    assert audits[0]["before"] == {"topic": topics.dlq, "error": "invalid_event"}


def test_tail_follow_sees_a_later_outcome(
    env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    outcome = {
        "fallbackId": "T1:1",
        "requestId": "T1",
        "recipientSeq": 1,
        "senderKey": "sk",
        "status": "SKIPPED",
        "reason": "fallback_disabled",
        "type": None,
        "bodyBytes": None,
        "truncated": False,
        "replacedChars": 0,
        "processedAt": "2026-11-25T12:00:00.000+09:00",
    }
    asyncio.run(put(bootstrap, topics.events, [("T0:1", {**outcome, "fallbackId": "T0:1"})]))
    tail = start(
        env, str(BIN / "fallback-service"), "tail", "--follow", "--json", "--status", "SKIPPED"
    )
    try:
        first = tail.stdout.readline()  # type: ignore[union-attr]
        assert orjson.loads(first)["fallbackId"] == "T0:1"
        asyncio.run(put(bootstrap, topics.events, [("T1:1", outcome)]))
        later = orjson.loads(tail.stdout.readline())  # type: ignore[union-attr]
        assert (later["fallbackId"], later["reason"]) == ("T1:1", "fallback_disabled")
        tail.send_signal(signal.SIGINT)
        assert tail.wait(15) == 0
    finally:
        if tail.poll() is None:
            tail.kill()


def test_tail_filters_and_table(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "fallbackId": "A:1",
            "status": "REQUESTED",
            "reason": None,
            "senderKey": "s1",
            "type": "SMS",
            "bodyBytes": 40,
        },
        {
            "fallbackId": "B:1",
            "status": "SKIPPED",
            "reason": "duplicate",
            "senderKey": "s2",
            "type": None,
            "bodyBytes": None,
        },
    ]
    asyncio.run(put(bootstrap, topics.events, [(r["fallbackId"], r) for r in rows]))
    code, out, _ = cli(capsys, "tail")
    assert code == 0 and "A:1" in out and "B:1" in out and "2 outcomes" in out
    code, out, _ = cli(capsys, "tail", "--reason", "duplicate", "--json")
    assert [orjson.loads(line)["fallbackId"] for line in out.splitlines()] == ["B:1"]
    code, out, _ = cli(capsys, "tail", "--sender-key", "s1", "--status", "requested")
    assert "A:1" in out and "B:1" not in out
    usage_error(capsys, "tail", "--status", "LOST")
    usage_error(capsys, "tail", "--since", "last tuesday")


def test_find(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], bootstrap: str, topics: Topics
) -> None:
    asyncio.run(seed(bootstrap, topics))
    port = free_port()
    # F4 is an LMS that expires quickly; F1 (an SMS) waits long enough for its result.
    results_on = {
        "FALLBACK_DELIVERY_RESULTS": "on",
        "FALLBACK_RESULT_DEADLINE_LMS": "2s",
        "FALLBACK_RESULT_SWEEP_SECONDS": "0.5",
    }
    with service_process({**env, **results_on, "FALLBACK_HTTP_PORT": str(port)}) as p:
        wait_ready(port, p)
        asyncio.run(
            put(
                bootstrap,
                topics.input,
                [
                    ("F1:1", event_dict(requestId="F1")),
                    ("F2:1", event_dict(requestId="F2", senderKey="unknown")),
                    ("F3:1", orjson.dumps(event_dict(requestId="F3", recipientSeq="1"))),
                    ("F4:1", event_dict(requestId="F4", content="긴 안내문 " * 20)),
                ],
            )
        )
        asyncio.run(read(bootstrap, topics.events, 3))
        code, out, _ = cli(capsys, "find", "F1:1")
        assert code == 0 and "answer      handed over, no delivery result yet" in out
        # The team's SMS service reports F1 delivered; F4 never gets a result.
        delivered = {
            "fallbackId": "F1:1",
            "status": "DELIVERED",
            "resultCode": "1000",
            "provider": "sms-service",
            "telecom": "SKT",
            "reportedAt": "2026-11-22T14:00:05+09:00",
        }
        asyncio.run(put(bootstrap, topics.results, [("F1:1", delivered)]))
        asyncio.run(read(bootstrap, topics.events, 5, within=30))
        asyncio.run(read(bootstrap, topics.dlq, 1))
    code, out, _ = cli(capsys, "find", "F1:1")
    assert code == 0 and "outcome     REQUESTED" in out and "request     SMS" in out
    assert "outcome     DELIVERED" in out
    assert "answer      DELIVERED at 2026-11-22T14:00:05+09:00" in out and "sms-service 1000" in out
    assert "01012345678" not in out and "010****5678" in out
    story: dict[str, Any] = orjson.loads(cli(capsys, "find", "F1:1", "--json")[1])
    assert [o["status"] for o in story["outcomes"]] == ["REQUESTED", "DELIVERED"]
    assert story["final"]["delivery"]["telecom"] == "SKT"
    assert story["answer"].startswith("DELIVERED")
    assert story["requests"][0]["recipientNo"] == "010****5678"
    code, out, _ = cli(capsys, "find", "F4:1")
    assert code == 0 and "answer      EXPIRED: no result came by the deadline" in out
    code, out, _ = cli(capsys, "find", "F2:1")
    assert code == 0 and "SKIPPED channel_not_configured" in out and "request" not in out
    code, out, _ = cli(capsys, "find", "F3:1")
    assert code == 0 and "dead letter invalid_event" in out
    code, _, err = cli(capsys, "find", "NOPE:1")
    assert code == 1 and "nothing about NOPE:1" in err


def test_console_script_exit_codes(env: dict[str, str]) -> None:
    def status(*argv: str) -> int:
        done = subprocess.run(
            [str(BIN / "fallback-service"), *argv],
            env={**env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=60,
            check=False,
        )
        return done.returncode

    assert status("channels", "list") == 0
    assert status("channels", "get", "missing") == 1
    assert status("channels", "get") == 2
    assert status("nonsense") == 2
