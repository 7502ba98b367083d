"""Delivery results (§7, §11) without a broker: the pure core, the changelog formats, the
awaited set, and the processor turning results and expiries into one final outcome each."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from service.core.models import MessageKind, Reason, Status
from service.core.results import (
    Awaited,
    Deadlines,
    DeliveryResult,
    Early,
    Expiry,
    FinalOutcome,
    Ignored,
    deadline_s,
    expired_outcome,
    final_outcome,
    identity,
    judge,
    parse_delivery_result,
    parse_expiry,
)
from service.core.rules import Policy
from service.core.settle import ProviderAnswer
from service.metrics import Metrics
from service.pipeline.observe import Observer
from service.pipeline.processor import Processor
from service.pipeline.results import EXPIRY, RECORD_KIND, RESULT, ResultSteps
from service.pipeline.seams import Write
from service.sinks.memory import ListSink
from service.state.awaited import ENTRY, AwaitedSet, Channels, Loading, Results
from service.state.digests import digest
from service.state.markers import (
    MarkerKind,
    early_marker,
    final_marker,
    marker,
    marker_awaits,
    marker_early,
    marker_final,
    marker_is_early,
    marker_kind,
)
from service.state.restore import Restore
from tests.factories import NOON_KST, REGISTRY, SENDER_KEY, channel, event_dict, record
from tests.fakes import MemoryDedupe, RecordingWriter

REPORTED = "2026-11-22T14:00:04.210+09:00"  # 05:00:04.210 UTC: 4.21 s after NOON_KST
FAILED_AT = "2026-11-22T14:00:00+09:00"


def result_dict(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fallbackId": "R1:1",
        "status": "DELIVERED",
        "resultCode": "1000",
        "resultMessage": "성공",
        "provider": "nhn",
        "telecom": "SKT",
        "reportedAt": REPORTED,
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not ...}


def awaited(fid: str = "R1:1", *, deadline: datetime | None = None) -> Awaited:
    when = deadline or NOON_KST + timedelta(hours=25)
    failed_ms = int(NOON_KST.timestamp() * 1000)
    return Awaited(fid, SENDER_KEY, MessageKind.SMS, failed_ms, int(when.timestamp()))


# The core


def test_a_result_parses_and_unknown_fields_are_ignored() -> None:
    parsed = parse_delivery_result(orjson.dumps(result_dict(extra=1, resultCode=1000)))
    assert isinstance(parsed, DeliveryResult)
    assert parsed.resultCode == "1000"  # a number is taken as the code it is
    assert parsed.reported_ms == int(NOON_KST.timestamp() * 1000) + 4210


@pytest.mark.parametrize(
    ("value", "error", "detail"),
    [
        (b"{", "invalid_json", ""),
        (b"[1]", "invalid_event", "not an object"),
        (orjson.dumps(result_dict(status="SENT")), "invalid_event", "status"),
        (orjson.dumps(result_dict(fallbackId=...)), "invalid_event", "fallbackId"),
        (orjson.dumps(result_dict(reportedAt="yesterday")), "invalid_event", "reportedAt"),
        (orjson.dumps(result_dict(reportedAt="2026-11-22T14:00:00")), "invalid_event", "offset"),
        (None, "invalid_json", "no value"),
        (b"{" + b" " * 70_000 + b"}", "oversized", "bytes"),
    ],
)
def test_malformed_results_say_why(value: bytes | None, error: str, detail: str) -> None:
    parsed = parse_delivery_result(value)
    assert not isinstance(parsed, DeliveryResult)
    assert parsed.error.value == error
    assert detail in parsed.detail


def test_status_is_read_in_any_case() -> None:
    parsed = parse_delivery_result(orjson.dumps(result_dict(status=" undelivered ")))
    assert isinstance(parsed, DeliveryResult) and parsed.status.value == "UNDELIVERED"


def test_the_final_outcome_of_a_result_is_section_7s() -> None:
    result = DeliveryResult.model_validate(result_dict())
    outcome = final_outcome(awaited(), result, NOON_KST + timedelta(seconds=5))
    data = orjson.loads(orjson.dumps(outcome))
    assert list(data)[:4] == ["fallbackId", "requestId", "recipientSeq", "senderKey"]
    assert data["status"] == "DELIVERED" and data["reason"] is None and data["type"] == "SMS"
    assert data["delivery"] == {
        "provider": "nhn",
        "resultCode": "1000",
        "resultMessage": "성공",
        "telecom": "SKT",
        "reportedAt": REPORTED,
        "latencyMs": 4210,
    }
    undelivered = final_outcome(
        awaited(),
        DeliveryResult.model_validate(result_dict(status="UNDELIVERED", resultCode="3006")),
        NOON_KST,
    )
    assert undelivered.status is Status.UNDELIVERED and undelivered.reason is Reason.UNDELIVERED


def test_latency_never_negative_and_expired_has_no_delivery() -> None:
    early_clock = DeliveryResult.model_validate(result_dict(reportedAt="2026-11-22T13:00:00+09:00"))
    assert final_outcome(awaited(), early_clock, NOON_KST).delivery.latencyMs == 0  # type: ignore[union-attr]
    gone = expired_outcome(awaited("R:x:7"), NOON_KST)
    assert (gone.status, gone.reason, gone.delivery) == (Status.EXPIRED, Reason.NO_RESULT, None)
    assert (gone.requestId, gone.recipientSeq) == ("R:x", 7)  # a requestId with colons
    assert identity("A:B:12") == ("A:B", 12)


def test_deadlines_by_type() -> None:
    deadlines = Deadlines(timedelta(hours=25), timedelta(hours=80))
    assert deadline_s(NOON_KST, MessageKind.SMS, deadlines) == int(NOON_KST.timestamp()) + 25 * 3600
    assert deadline_s(NOON_KST, MessageKind.LMS, deadlines) == int(NOON_KST.timestamp()) + 80 * 3600


def test_judge_every_case() -> None:
    result = DeliveryResult.model_validate(result_dict())
    due = awaited(deadline=NOON_KST)
    assert isinstance(
        judge(result, awaited(), requested=True, expired=False, now=NOON_KST), FinalOutcome
    )
    # A result at or after the deadline does not count: the sweep makes it EXPIRED.
    assert judge(result, due, requested=True, expired=False, now=NOON_KST) is Ignored.EXPIRED
    assert judge(result, None, requested=True, expired=True, now=NOON_KST) is Ignored.EXPIRED
    assert judge(result, None, requested=True, expired=False, now=NOON_KST) is Ignored.LATER
    assert judge(result, None, requested=False, expired=False, now=NOON_KST) is Early.KEPT


def test_expiry_records_round_trip() -> None:
    expiry = Expiry("R1:1", SENDER_KEY, MessageKind.LMS)
    assert parse_expiry(expiry.to_json()) == expiry
    assert (
        parse_expiry(b"{}") is None and parse_expiry(b"junk") is None and parse_expiry(None) is None
    )


# The changelog formats


def test_marker_kinds_read_without_parsing() -> None:
    source = ("in", 0, 7)
    plain = marker("R1:1", "t", source, [b'{"fallbackId":"R1:1","status":"REQUESTED"}'])
    waits = marker("R1:1", "t", source, [], awaited(), None)
    done = marker("R1:1", "t", source, [], awaited(), "DELIVERED")
    final = final_marker("R1:1", "EXPIRED", ("sms.send.results", 0, 3), b'{"status":"EXPIRED"}')
    early = early_marker("R1:1", ("sms.send.results", 0, 3), orjson.dumps(result_dict()))
    assert [marker_kind(v) for v in (plain, waits, done, final, early)] == [
        MarkerKind.REQUESTED,
        MarkerKind.AWAITING,
        MarkerKind.FINAL,
        MarkerKind.FINAL,
        MarkerKind.EARLY,
    ]
    assert marker_kind(b'{"fallbackId":"old"}') is MarkerKind.REQUESTED
    # The restore's shortcut with results off says the same of each.
    longest = early_marker("R1:1", ("t" * 249, 2**31 - 1, 2**63 - 1), orjson.dumps(result_dict()))
    every = (plain, waits, done, final, early, longest, b'{"fallbackId":"old"}', b'{"source":"x"}')
    assert [marker_is_early(v) for v in every] == [
        marker_kind(v) is MarkerKind.EARLY for v in every
    ]
    # and the restore's loop with results off remembers all of them but the early ones.
    off = Restore([0], horizon_ms=0, floors={}, tails={0: len(every)}, room=0)
    off.feed(
        0,
        [
            SimpleNamespace(key=b"R%d:1" % i, value=v, offset=i, timestamp=5_000_000)
            for i, v in enumerate(every)
        ],
    )
    remembered = off.states()[0]
    assert [f"R{i}:1" in remembered for i in range(len(every))] == [
        not marker_is_early(v) for v in every
    ]
    a = awaited()
    assert marker_awaits(waits) == (MessageKind.SMS, a.failed_at_ms, a.deadline_s, SENDER_KEY)
    assert marker_final(done) == "DELIVERED" and marker_final(final) == "EXPIRED"
    assert orjson.loads(marker_early(early)) == result_dict()


def test_a_channel_name_with_a_bracket_is_read_whole() -> None:
    odd = Awaited("R1:1", 'k]"x', MessageKind.LMS, 1, 2)
    assert marker_awaits(marker("R1:1", "t", ("in", 0, 1), [], odd))[3] == 'k]"x'


# The awaited set


def test_the_awaited_set_keeps_24_bytes_a_fallback() -> None:
    assert ENTRY.itemsize == 24
    awaited_set = AwaitedSet(Channels())
    for i in range(10_000):
        awaited_set.add(digest(f"R:{i}".encode())[0], awaited(f"R:{i}"))
    awaited_set.due(0)  # merges
    assert len(awaited_set) == 10_000 and awaited_set.nbytes == 240_000
    key = digest(b"R:42")[0]
    assert awaited_set.get(key, "R:42") == awaited("R:42")
    assert (
        awaited_set.pop(key) and awaited_set.get(key, "R:42") is None and not awaited_set.pop(key)
    )
    assert len(awaited_set) == 9_999
    later = int((NOON_KST + timedelta(hours=26)).timestamp())
    assert awaited_set.due(int(NOON_KST.timestamp())) == 0 and awaited_set.due(later) == 9_999


def test_a_batch_of_requests_adds_each_once() -> None:
    awaited_set = AwaitedSet(Channels())
    keys = {i: digest(f"R:{i}".encode())[0] for i in range(6)}
    awaited_set.add_many([(keys[i], awaited(f"R:{i}")) for i in (0, 1, 2)])
    awaited_set.due(0)  # merged into the array
    awaited_set.pop(keys[1])  # dead in the array
    awaited_set.add(keys[3], awaited("R:3"))  # recent, not merged
    # Awaited already (array, recent), dead, new twice over: each ends awaited once.
    awaited_set.add_many([(keys[i], awaited(f"R:{i}")) for i in (0, 3, 1, 4, 4, 5)])
    assert len(awaited_set) == 6
    for i in range(6):
        assert awaited_set.pop(keys[i]) and not awaited_set.pop(keys[i]), i
    assert len(awaited_set) == 0


# The processor


def build(
    sink: ListSink | None = None, *, partitions: int = 1, now: datetime = NOON_KST
) -> tuple[Processor, ListSink, RecordingWriter, Metrics, Results]:
    metrics = Metrics()
    sink = sink or ListSink()
    writer = RecordingWriter()
    dedupe = MemoryDedupe(partitions)
    results = Results(Deadlines(), early_window_ms=600_000)
    dedupe.results = results
    results.install(
        {
            p: Restore(
                [p], horizon_ms=0, floors={}, tails={}, room=0, results=results
            ).results_states()[p]
            for p in range(partitions)
        }
    )
    clock = [now]
    processor = Processor(
        policy=Policy(quiet_hours=None),
        events_topic="events",
        dlq_topic="dlq",
        repartition_topic="repartition",
        channels={SENDER_KEY: channel()},
        sender_numbers=REGISTRY,
        requested=dedupe,
        sink=sink,
        writer=writer,
        observer=Observer(metrics, log_outcomes=False),
        clock=lambda: clock[0],
        results=ResultSteps(
            results_topic="results",
            repartition_topic="repartition",
            events_topic="events",
            dlq_topic="dlq",
            requested=dedupe,
            awaiting=results,
            final_marker=final_marker,
            early_marker=early_marker,
        ),
    )
    processor.now = clock  # type: ignore[attr-defined]
    return processor, sink, writer, metrics, results


def written(writer: RecordingWriter, topic: str) -> list[Write]:
    return [w for step in writer.steps for w in step if w.topic == topic]


def statuses(writer: RecordingWriter) -> list[str]:
    return [orjson.loads(w.value or b"")["status"] for w in written(writer, "events")]


def result_record(offset: int = 0, partition: int = 0, **fields: Any) -> Any:
    return record(result_dict(**fields), topic="results", offset=offset, partition=partition)


def ignored(metrics: Metrics, why: str) -> float:
    return metrics.registry.get_sample_value("fallback_results_ignored_total", {"why": why}) or 0


async def test_a_result_ends_an_awaited_fallback_once() -> None:
    processor, _, writer, metrics, results = build()
    await processor.process([record(event_dict(failedAt=FAILED_AT), offset=0)])
    assert len(results) == 1
    marker_value = written(writer, "dedupe")[0].value or b""
    assert marker_kind(marker_value) is MarkerKind.AWAITING
    await processor.process([result_record(0)])
    assert statuses(writer) == ["REQUESTED", "DELIVERED"]
    final = orjson.loads(written(writer, "events")[-1].value or b"")
    assert final["delivery"]["latencyMs"] == 4210 and final["requestId"] == "R1"
    finals = written(writer, "dedupe")[1:]
    assert [marker_kind(f.value or b"") for f in finals] == [MarkerKind.FINAL]
    assert len(results) == 0
    # A second result is counted, not an outcome.
    await processor.process([result_record(1, status="UNDELIVERED")])
    assert statuses(writer) == ["REQUESTED", "DELIVERED"] and ignored(metrics, "later") == 1
    samples = metrics.registry.get_sample_value(
        "fallback_results_total", {"status": "DELIVERED", "provider": "nhn"}
    )
    assert samples == 1
    assert metrics.registry.get_sample_value("fallback_result_latency_seconds_count") == 1
    assert writer.commits[-1] == {("results", 0): 2}


async def test_a_result_before_its_request_is_applied_once_it_is_recorded() -> None:
    processor, _, writer, metrics, results = build()
    await processor.process([result_record(0)])
    early = written(writer, "dedupe")
    assert [marker_kind(e.value or b"") for e in early] == [MarkerKind.EARLY]
    assert statuses(writer) == []
    await processor.process([record(event_dict(failedAt=FAILED_AT), offset=0)])
    assert statuses(writer) == ["REQUESTED", "DELIVERED"]
    requested = written(writer, "dedupe")[-1].value or b""
    assert marker_kind(requested) is MarkerKind.FINAL  # the requested marker says it is final
    assert len(orjson.loads(requested)["outcomes"]) == 2
    assert len(results) == 0 and ignored(metrics, "later") == 0


@pytest.mark.parametrize("result_first", [True, False])
async def test_a_result_in_the_same_batch_as_its_request(result_first: bool) -> None:
    processor, _, writer, _, results = build()
    event = record(event_dict(failedAt=FAILED_AT), offset=0)
    batch = [result_record(0), event] if result_first else [event, result_record(0)]
    await processor.process(batch)
    assert statuses(writer) == ["REQUESTED", "DELIVERED"]
    assert len(results) == 0


async def test_a_result_never_requested_is_counted_after_the_early_window() -> None:
    processor, _, writer, _metrics, results = build()
    await processor.process([result_record(0, fallbackId="R9:9")])
    now_ms = int(NOON_KST.timestamp() * 1000)
    assert results.prune_early(now_ms + 599_000) == 0
    assert results.prune_early(now_ms + 600_000) == 1
    assert statuses(writer) == []


async def test_malformed_results_are_dead_letters_naming_the_results_topic() -> None:
    processor, _, writer, _metrics, _ = build()
    await processor.process([record(b"{nope", topic="results", offset=4)])
    (dead,) = written(writer, "dlq")
    headers = dict(dead.headers)
    assert (
        headers["x-original-topic"] == b"results" and headers["x-fallback-error"] == b"invalid_json"
    )
    assert writer.commits == [{("results", 0): 5}]


async def test_a_result_on_another_partition_goes_to_its_owner() -> None:
    processor, _, writer, _, _ = build(partitions=4)
    fid = "R1:1"
    owner = processor.requested.owner(fid.encode())
    elsewhere = (owner + 1) % 4
    await processor.process([result_record(0, partition=elsewhere)])
    (forward,) = written(writer, "repartition")
    assert forward.partition == owner and forward.key == fid.encode()
    assert dict(forward.headers)[RECORD_KIND] == RESULT


async def test_an_expiry_ends_the_wait_with_expired_and_a_late_result_is_counted() -> None:
    processor, _, writer, metrics, results = build()
    await processor.process([record(event_dict(), offset=0)])
    expiry = Expiry("R1:1", SENDER_KEY, MessageKind.SMS).to_json()
    command = record(expiry, topic="repartition", headers=((RECORD_KIND, EXPIRY),), key=b"R1:1")
    await processor.process([command])  # not due yet: nothing
    assert statuses(writer) == ["REQUESTED"]
    processor.now[0] = NOON_KST + timedelta(hours=25)  # type: ignore[attr-defined]
    await processor.process([command])
    assert statuses(writer) == ["REQUESTED", "EXPIRED"]
    gone = orjson.loads(written(writer, "events")[-1].value or b"")
    assert gone["reason"] == "no_result" and gone["delivery"] is None
    await processor.process([command])  # a second expiry finds nothing
    await processor.process([result_record(0)])
    assert statuses(writer) == ["REQUESTED", "EXPIRED"] and ignored(metrics, "expired") == 1
    assert len(results) == 0


async def test_a_failed_send_awaits_nothing() -> None:
    refused = ListSink(lambda d: ProviderAnswer("nhn", False, result_code=-1000))
    processor, _, writer, _metrics, results = build(refused)
    await processor.process([record(event_dict(), offset=0)])
    assert statuses(writer) == ["REQUESTED", "FAILED"] and len(results) == 0


async def test_a_sent_fallback_awaits_its_result() -> None:
    sent = ListSink(lambda d: ProviderAnswer("nhn", True, request_id="N1", result_code=0))
    processor, _, writer, _, results = build(sent)
    await processor.process([record(event_dict(), offset=0), result_record(0)])
    assert statuses(writer) == ["REQUESTED", "SENT", "DELIVERED"] and len(results) == 0


async def test_restore_reads_what_is_awaited_final_and_early() -> None:
    processor, _, writer, _, _results = build()
    events = [record(event_dict(recipientSeq=n, failedAt=FAILED_AT), offset=n) for n in range(1, 5)]
    await processor.process(events)
    await processor.process([result_record(0, fallbackId="R1:2")])
    await processor.process([result_record(1, fallbackId="R7:1")])  # early
    processor.now[0] = NOON_KST + timedelta(hours=25)  # type: ignore[attr-defined]
    expiry = Expiry("R1:3", SENDER_KEY, MessageKind.SMS).to_json()
    await processor.process(
        [record(expiry, topic="repartition", headers=((RECORD_KIND, EXPIRY),), offset=0)]
    )
    changelog = written(writer, "dedupe")
    again = Results(Deadlines(), early_window_ms=10**13)  # the records carry time 0
    restore = Restore(
        [0],
        horizon_ms=0,
        floors={},
        tails={},
        room=0,
        results=again,
        now_ms=int(NOON_KST.timestamp() * 1000),
        ends={0: len(changelog)},
    )
    restore.feed(0, [record(w.value, key=w.key, offset=i) for i, w in enumerate(changelog)])
    again.install(restore.results_states())
    assert len(again) == 2  # R1:1 and R1:4 still await; R1:2 delivered, R1:3 expired
    assert again.awaited(0, digest(b"R1:1"), "R1:1") is not None
    assert again.awaited(0, digest(b"R1:2"), "R1:2") is None
    assert again.expired(0, digest(b"R1:3"))
    assert again.early(0, digest(b"R7:1")) is not None
    assert again.partitions[0].cursors[MessageKind.SMS] == 0  # the first awaiting marker
    assert again.partitions[0].cursors[MessageKind.LMS] == len(changelog)
    # An early record does not count as a requested fallback.
    states = restore.states()
    assert digest(b"R7:1") not in states[0] and digest(b"R1:1") in states[0]


async def test_a_final_marker_cut_short_writes_its_outcome_again_and_nothing_else() -> None:
    processor, _, writer, _, _ = build()
    await processor.process([record(event_dict(), offset=0)])
    await processor.process([result_record(5)])
    final = written(writer, "dedupe")[-1]
    outcome = written(writer, "events")[-1].value
    # A restarted replica: the final marker's result record was not committed.
    fresh, _, writer2, _, _ = build()
    fresh.requested.restore_from([final], {("results", 0): 5})  # type: ignore[attr-defined]
    await fresh.process([result_record(5)])
    assert [w.value for w in written(writer2, "events")] == [outcome]
    assert written(writer2, "dedupe") == []


def test_a_restore_parses_await_arrays_in_chunks_whatever_the_channel_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restore's fast path (`awaits_field`, arrays parsed a chunk at a time) reads back
    exactly what `marker` wrote, for channel names with `]`, quotes and the marker's own
    field names in them, across chunk borders."""
    monkeypatch.setattr(Loading, "CHUNK", 3)
    names = ["sk-1", "sk-]", 'sk-"],"fallbackId":"x', "sk-한글", "sk-\\"]
    written: list[Awaited] = []
    records = []
    for i in range(11):
        fid = f"C{i}:1"
        awaits = Awaited(
            fid,
            names[i % len(names)],
            MessageKind.LMS if i in (4, 5, 9) else MessageKind.SMS,
            1_700_000_000_000 + i,
            1_800_000_000 + i,
        )
        written.append(awaits)
        value = marker(fid, "2026-11-22T14:00:00.000+09:00", ("in", 0, i), [], awaits)
        assert marker_awaits(value) == (
            awaits.kind,
            awaits.failed_at_ms,
            awaits.deadline_s,
            awaits.sender_key,
        )
        records.append(record(value, key=fid.encode(), offset=100 + i))
    again = Results(Deadlines(), early_window_ms=0)
    restore = Restore(
        [0], horizon_ms=0, floors={}, tails={}, room=0, results=again, now_ms=0, ends={0: 111}
    )
    restore.feed(0, records)
    again.install(restore.results_states())
    assert len(again) == 11
    for awaits in written:
        found = again.awaited(0, digest(awaits.fallback_id.encode()), awaits.fallback_id)
        assert found == awaits
    assert again.partitions[0].cursors == {MessageKind.SMS: 100, MessageKind.LMS: 104}
