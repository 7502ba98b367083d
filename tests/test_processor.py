"""The processor on fakes (list sink, recording writer, memory dedupe): steps and observation."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import TopicPartition

from service.core.models import outcome_without_event
from service.core.rules import Policy
from service.core.settle import ProviderAnswer
from service.metrics import Metrics
from service.pipeline.batch import Held
from service.pipeline.observe import Observer
from service.pipeline.processor import Processor
from service.pipeline.seams import Delivery, Write
from service.sinks.kafka import KafkaSink
from service.sinks.memory import ListSink
from service.state.dedupe import owner_partition
from tests.factories import NOON_KST, REGISTRY, SENDER_KEY, channel, event_dict, record
from tests.fakes import MemoryDedupe, RecordingWriter


def build(
    sink: ListSink | None = None, writer: RecordingWriter | None = None
) -> tuple[Processor, ListSink, RecordingWriter, Metrics]:
    metrics = Metrics()
    sink = sink or ListSink()
    writer = writer or RecordingWriter()
    processor = Processor(
        policy=Policy(quiet_hours=None),
        events_topic="events",
        dlq_topic="dlq",
        repartition_topic="repartition",
        channels={SENDER_KEY: channel()},
        sender_numbers=REGISTRY,
        requested=MemoryDedupe(),
        sink=sink,
        writer=writer,
        observer=Observer(metrics, log_outcomes=False),
        clock=lambda: NOON_KST,
    )
    return processor, sink, writer, metrics


def count(metrics: Metrics, status: str, reason: str = "") -> float:
    value = metrics.registry.get_sample_value(
        "fallback_outcomes_total", {"status": status, "reason": reason}
    )
    return value or 0.0


async def test_steps_in_order_requests_markers_outcomes_commit() -> None:
    processor, sink, writer, metrics = build()
    dedupe = processor.requested = MemoryDedupe(partitions=2)
    a, b = _owned_by(0, 2)[:2]
    c = _owned_by(1, 2)[0]
    records = [
        record(event_dict(recipientSeq=a), offset=0),
        record(b"junk", offset=1),
        record(event_dict(recipientSeq=b, senderKey="nope"), offset=2),
        record(event_dict(recipientSeq=c), offset=3, partition=1),
    ]
    await processor.process(records)
    assert [d.request.fallbackId for d in sink.delivered] == [f"R1:{a}", f"R1:{c}"]
    assert [d.source.partition for d in sink.delivered] == [0, 1]
    # Requests (with the sink), then markers with the dead letters, then outcomes; then the
    # commit.
    assert writer.topics() == [{"dedupe", "dlq"}, {"events"}]
    markers = [w.key for w in writer.steps[0] if w.topic == "dedupe"]
    assert markers == [f"R1:{a}".encode(), f"R1:{c}".encode()]
    assert [orjson.loads(w.value or b"")["status"] for w in writer.steps[1]] == [
        "REQUESTED",
        "SKIPPED",
        "REQUESTED",
    ]
    assert writer.commits == [{("in", 0): 3, ("in", 1): 4}]
    assert f"R1:{a}" in dedupe and f"R1:{b}" not in dedupe
    assert count(metrics, "REQUESTED") == 2


async def test_without_requests_dead_letters_and_outcomes_go_in_one_step() -> None:
    processor, sink, writer, _ = build()
    await processor.process([record(b"[1]"), record(event_dict(senderKey="nope"), offset=1)])
    assert sink.delivered == []
    assert writer.topics() == [{"dlq", "events"}]
    assert writer.commits == [{("in", 0): 2}]


async def test_kafka_sink_publishes_through_the_writer() -> None:
    writer = RecordingWriter()
    sink = KafkaSink(writer, "sms")
    processor, _, _, _ = build(writer=writer)
    processor.sink = sink
    await processor.process([record(event_dict())])
    request = writer.steps[0][0]
    assert (request.topic, request.key) == ("sms", b"R1:1")
    assert request.headers == [("idempotency-key", b"R1:1")]
    assert writer.topics() == [{"sms"}, {"dedupe"}, {"events"}]


async def test_a_failed_batch_is_observed_once_when_it_finally_succeeds() -> None:
    # The markers' write fails once: the request was handed over, nothing was committed.
    processor, sink, writer, metrics = build(writer=RecordingWriter(fail_step=1))
    records = [record(event_dict())]
    with pytest.raises(RuntimeError):
        await processor.process(records)
    assert count(metrics, "REQUESTED") == 0  # handed over in part, never committed: not counted
    assert metrics.registry.get_sample_value("fallback_messages_total", {"type": "SMS"}) is None
    assert writer.commits == []
    await processor.process(records)  # read again after the rewind
    assert len(sink.delivered) == 2  # the in-flight repeat, with the same idempotency key
    assert count(metrics, "REQUESTED") == 1
    assert metrics.registry.get_sample_value("fallback_messages_total", {"type": "SMS"}) == 1
    assert metrics.registry.get_sample_value("fallback_batch_records_count") == 1


def _answer(delivery: Delivery) -> ProviderAnswer:
    seq = delivery.request.origin.recipientSeq
    if seq == 1:
        return ProviderAnswer("nhn", True, "20261125-1", 0, "SUCCESS")
    return ProviderAnswer("nhn", False, None, -2019, "RecipientNo is invalid.")


async def test_a_delivering_sink_settles_after_each_requested_outcome() -> None:
    processor, _, writer, metrics = build(sink=ListSink(_answer))
    await processor.process(
        [record(event_dict(recipientSeq=1)), record(event_dict(recipientSeq=2))]
    )
    outcomes = [orjson.loads(w.value or b"") for w in writer.steps[-1]]
    assert [(o["fallbackId"], o["status"], o["reason"]) for o in outcomes] == [
        ("R1:1", "REQUESTED", None),
        ("R1:1", "SENT", None),
        ("R1:2", "REQUESTED", None),
        ("R1:2", "FAILED", "provider_rejected"),
    ]
    assert outcomes[1]["provider"] == {
        "name": "nhn",
        "requestId": "20261125-1",
        "resultCode": 0,
        "resultMessage": "SUCCESS",
        "attempts": 1,
    }
    # Only the SENT one counts as requested: a FAILED one may be re-published after a fix.
    assert [w.key for w in writer.steps[0]] == [b"R1:1"]
    assert not processor.requested.contains(0, "R1:2")
    assert count(metrics, "SENT") == 1 and count(metrics, "FAILED", "provider_rejected") == 1


def test_convert_does_no_io_and_counts_nothing() -> None:
    processor, sink, writer, metrics = build()
    batch = processor.convert([record(event_dict()), record(b"x", offset=1)], NOON_KST)
    assert len(batch.deliveries) == 1 and len(batch.dead_letters) == 1
    assert sink.delivered == [] and writer.steps == []
    assert count(metrics, "REQUESTED") == 0


def test_dead_letter_headers_replace_forged_ones() -> None:
    processor, _, _, _ = build()
    forged = (
        ("x-fallback-error", b"forged"),
        ("x-original-offset", b"999999"),
        ("trace", b"t-1"),
    )
    batch = processor.convert([record(b"{", offset=7, headers=forged)], NOON_KST)
    letter: Write = batch.dead_letters[0]
    names = [k for k, _ in letter.headers]
    assert len(names) == len(set(names))
    headers = dict(letter.headers)
    assert headers["x-fallback-error"] == b"invalid_json"
    assert headers["x-original-offset"] == b"7"
    assert headers["trace"] == b"t-1"


async def test_dedupe_is_caught_up_before_each_batch() -> None:
    processor, _, _, _ = build()
    dedupe = processor.requested
    assert isinstance(dedupe, MemoryDedupe)
    await processor.process([record(event_dict())])
    await processor.process([record(event_dict(), offset=1)])
    assert dedupe.catch_ups == 2


async def test_the_clock_is_the_injected_one_for_outcomes_markers_and_settlements() -> None:
    moments = iter(
        [
            datetime(2026, 11, 25, 3, 0, tzinfo=UTC),  # the batch's time
            datetime(2026, 11, 25, 3, 0, 4, 250_000, tzinfo=UTC),  # when the answers settle
        ]
    )
    processor, _, writer, _ = build(sink=ListSink(_sent))
    processor.clock = lambda: next(moments)
    await processor.process([record(event_dict())])
    marker = orjson.loads(writer.steps[0][0].value or b"")
    requested, sent = (orjson.loads(w.value or b"") for w in writer.steps[1])
    assert requested["processedAt"] == "2026-11-25T12:00:00.000+09:00"
    assert marker["requestedAt"] == "2026-11-25T12:00:00.000+09:00"
    assert sent["processedAt"] == "2026-11-25T12:00:04.250+09:00"


def _owned_by(partition: int, partitions: int) -> list[int]:
    """Recipient sequence numbers whose fallback `R1:{seq}` is owned by `partition`."""
    return [s for s in range(1, 200) if owner_partition(f"R1:{s}", partitions) == partition]


async def test_an_event_on_a_partition_that_does_not_own_it_is_routed_to_its_owner() -> None:
    processor, sink, writer, metrics = build()
    processor.requested = MemoryDedupe(partitions=3)
    here, there = _owned_by(0, 3)[0], _owned_by(2, 3)[0]
    records = [
        record(event_dict(recipientSeq=here), offset=0, headers=(("trace", b"t"),)),
        record(event_dict(recipientSeq=there), offset=1, key=b"not-the-id"),
    ]
    await processor.process(records)
    assert [d.request.fallbackId for d in sink.delivered] == [f"R1:{here}"]
    forwarded = [w for w in writer.steps[0] if w.topic == "repartition"]  # beside the markers
    assert [(w.topic, w.key, w.partition) for w in forwarded] == [
        ("repartition", f"R1:{there}".encode(), 2)
    ]
    assert forwarded[0].value == records[1].value  # the event as it came
    assert dict(forwarded[0].headers)["x-fallback-routed-from"] == b"in/0/1"
    # It gets no outcome here, and its offset is done here: its owner decides it.
    outcomes = [orjson.loads(w.value or b"")["fallbackId"] for w in writer.steps[-1]]
    assert outcomes == [f"R1:{here}"]
    assert writer.commits == [{("in", 0): 2}]
    assert metrics.registry.get_sample_value("fallback_routed_total") == 1


async def test_markers_go_to_the_owner_partition_of_the_changelog() -> None:
    processor, _, writer, _ = build()
    processor.requested = MemoryDedupe(partitions=3)
    seq = _owned_by(1, 3)[0]
    await processor.process([record(event_dict(recipientSeq=seq), partition=1)])
    markers = writer.steps[0]
    assert [(w.topic, w.key, w.partition) for w in markers] == [("dedupe", f"R1:{seq}".encode(), 1)]
    assert processor.requested.contains(1, f"R1:{seq}")


def test_a_dead_letter_too_large_for_the_dlq_is_cut_to_fit_and_says_so() -> None:
    processor, _, _, _ = build()
    processor.dlq_max_bytes = 10_000
    big = b"{" + b"x" * 70_000
    batch = processor.convert([record(big, key=b"k", headers=(("trace", b"t"),))], NOON_KST)
    letter = batch.dead_letters[0]
    headers = dict(letter.headers)
    assert headers["x-fallback-value-truncated"] == b"true"
    assert headers["x-fallback-original-size"] == b"70001"
    assert headers["x-fallback-error"] == b"oversized"
    assert letter.value is not None and big.startswith(letter.value)
    size = (
        len(letter.value)
        + len(letter.key or b"")
        + sum(len(k) + len(v) for k, v in headers.items())
    )
    assert size <= 10_000
    small = processor.convert([record(b"{", key=b"k")], NOON_KST).dead_letters[0]
    assert small.value == b"{" and "x-fallback-value-truncated" not in dict(small.headers)


async def test_held_requests_commit_what_settled_and_name_what_to_read_again() -> None:
    # Partition 0: offsets 0..5. Seq 3 (offset 2) is held; seq 3 again at offset 4 repeats it.
    held = {3}
    sink = ListSink(_sent, hold=lambda d: d.request.origin.recipientSeq in held)
    processor, _, writer, metrics = build(sink=sink)
    records = [
        record(event_dict(recipientSeq=1), offset=0),
        record(b"junk", offset=1),
        record(event_dict(recipientSeq=3), offset=2),
        record(event_dict(recipientSeq=4), offset=3),
        record(event_dict(recipientSeq=3), offset=4),
        record(event_dict(recipientSeq=5), offset=5),
    ]
    with pytest.raises(Held) as caught:
        await processor.process(records)
    exc = caught.value
    tp = TopicPartition("in", 0)
    assert exc.rewind == {tp: 2} and exc.held == 2
    # Past the held record, these were handled in full: skipped when read again.
    assert exc.done == {(tp, 3), (tp, 5)}
    assert writer.commits == [{("in", 0): 2}]
    outcomes = [orjson.loads(w.value or b"") for w in writer.steps[-1]]
    assert [(o["fallbackId"], o["status"]) for o in outcomes] == [
        ("R1:1", "REQUESTED"),
        ("R1:1", "SENT"),
        ("R1:4", "REQUESTED"),
        ("R1:4", "SENT"),
        ("R1:5", "REQUESTED"),
        ("R1:5", "SENT"),
    ]
    markers = [w.key for w in writer.steps[0] if w.topic == "dedupe"]
    assert markers == [b"R1:1", b"R1:4", b"R1:5"]
    assert not processor.requested.contains(0, "R1:3")
    assert count(metrics, "SENT") == 3 and count(metrics, "REQUESTED") == 3
    # The provider is back: the records read again settle, nothing is sent twice.
    held.clear()
    await processor.process([records[2], records[4]])
    assert [d.request.fallbackId for d in sink.delivered].count("R1:3") == 1
    assert writer.commits[-1] == {("in", 0): 5}


async def test_everything_held_commits_nothing_new() -> None:
    sink = ListSink(_sent, hold=lambda d: True)
    processor, _, writer, _ = build(sink=sink)
    with pytest.raises(Held) as caught:
        await processor.process([record(event_dict(recipientSeq=1), offset=7)])
    assert caught.value.rewind == {TopicPartition("in", 0): 7}
    # The commit is of the first held record's offset: nothing new.
    assert writer.commits == [{("in", 0): 7}]
    assert all(not step for step in writer.steps)


def _sent(delivery: Delivery) -> ProviderAnswer:
    return ProviderAnswer("nhn", True, "REQ", 0, "SUCCESS")


def _kafka_sink_build(writer: RecordingWriter) -> Processor:
    processor, _, _, _ = build(writer=writer)
    processor.sink = KafkaSink(writer, "sms")
    return processor


def _keys_per_topic(writer: RecordingWriter) -> dict[str, list[bytes | None]]:
    per: dict[str, list[bytes | None]] = {}
    for step in writer.steps:
        for w in step:
            per.setdefault(w.topic, []).append(w.key)
    return per


async def test_a_large_batch_is_written_in_parts_each_topic_in_input_order() -> None:
    # 600 records: parts of 250, 250 and 100, written while the next part converts.
    writer = RecordingWriter(round_trip=0.001)
    processor = _kafka_sink_build(writer)
    records = [record(event_dict(recipientSeq=i + 1), offset=i) for i in range(600)]
    await processor.process(records)
    expected = [f"R1:{i + 1}".encode() for i in range(600)]
    per = _keys_per_topic(writer)
    assert per["sms"] == per["dedupe"] == per["events"] == expected
    assert [len(step) for step in writer.steps if step[0].topic == "sms"] == [250, 250, 100]
    # Each part's marker only after its request; its outcome only after its marker.
    order = [(w.topic, w.key) for step in writer.steps for w in step]
    for key in (expected[0], expected[300], expected[599]):
        assert order.index(("sms", key)) < order.index(("dedupe", key))
        assert order.index(("dedupe", key)) < order.index(("events", key))
    assert writer.commits == [{("in", 0): 600}]
    assert all(f"R1:{i + 1}" in processor.requested for i in range(600))  # type: ignore[operator]


async def test_a_fallback_repeated_in_a_later_part_is_a_duplicate() -> None:
    writer = RecordingWriter(round_trip=0.001)
    processor = _kafka_sink_build(writer)
    records = [record(event_dict(recipientSeq=i + 1), offset=i) for i in range(300)]
    records.append(record(event_dict(recipientSeq=1), offset=300))
    await processor.process(records)
    assert _keys_per_topic(writer)["sms"].count(b"R1:1") == 1
    last = [step for step in writer.steps if step[0].topic == "events"][-1][-1]
    assert orjson.loads(last.value or b"")["reason"] == "duplicate"


async def test_a_failed_part_stops_the_parts_after_it_and_nothing_is_committed() -> None:
    # Writes: 1 part one's requests, 2 its markers (fails), ... part two may hand its requests
    # over (the step before its markers), but writes no marker and no outcome.
    writer = RecordingWriter(fail_step=2, round_trip=0.001)
    processor = _kafka_sink_build(writer)
    records = [record(event_dict(recipientSeq=i + 1), offset=i) for i in range(500)]
    with pytest.raises(RuntimeError):
        await processor.process(records)
    per = _keys_per_topic(writer)
    assert "dedupe" not in per and "events" not in per
    assert writer.commits == []
    assert "R1:1" not in processor.requested  # type: ignore[operator]


async def test_a_cancelled_batch_leaves_no_part_writing_on_its_own() -> None:
    import asyncio

    writer = RecordingWriter(round_trip=0.02)
    processor = _kafka_sink_build(writer)
    records = [record(event_dict(recipientSeq=i + 1), offset=i) for i in range(600)]
    task = asyncio.create_task(processor.process(records))
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    written = len(writer.steps)
    await asyncio.sleep(0.1)
    assert len(writer.steps) == written and writer.commits == []


async def test_a_record_cut_short_after_its_marker_gets_its_outcomes_again_and_no_request() -> None:
    # First life: the requests were delivered, the markers and outcomes written; the process
    # died before the commit (or, the same to what comes after, before the outcomes' write).
    processor, sink, writer, _ = build(sink=ListSink(_answer))
    records = [
        record(event_dict(recipientSeq=1), offset=7),
        record(event_dict(requestId="R2"), offset=8),
    ]
    await processor.process(records)
    markers, first = writer.steps
    assert [orjson.loads(m.value or b"")["source"] for m in markers] == ["in/0/7", "in/0/8"]
    # Second life: the changelog restored with the input committed up to offset 7.
    again, sink, writer, metrics = build(sink=ListSink(_answer))
    restored = again.requested = MemoryDedupe()
    restored.restore_from(markers, {("in", 0): 7})
    republished = record(event_dict(recipientSeq=1), offset=9, key=b"other")
    await again.process([*records, republished])
    assert sink.delivered == []  # nothing is sent again
    assert writer.topics() == [{"events"}]
    written = writer.steps[0]
    outcomes = [orjson.loads(w.value or b"") for w in written]
    assert [(o["fallbackId"], o["status"], o["reason"]) for o in outcomes] == [
        ("R1:1", "REQUESTED", None),
        ("R1:1", "SENT", None),
        ("R2:1", "REQUESTED", None),
        ("R2:1", "SENT", None),
        ("R1:1", "SKIPPED", "duplicate"),  # another record of the same fallback
    ]
    # The outcomes are those the first life wrote, byte for byte.
    assert [w.value for w in written[:4]] == [w.value for w in first]
    assert count(metrics, "REQUESTED") == 2 and count(metrics, "SENT") == 2
    assert metrics.registry.get_sample_value("fallback_messages_total", {"type": "SMS"}) == 2
    assert restored.in_flight == {}  # committed now: read again later, they are duplicates


async def test_only_markers_of_uncommitted_records_of_the_same_record_are_in_flight() -> None:
    processor, _, writer, _ = build()
    processor.sink = KafkaSink(writer, "sms")
    await processor.process([record(event_dict(), offset=4)])
    markers = [w for w in writer.steps[1] if w.topic == "dedupe"]
    committed_past = MemoryDedupe()
    committed_past.restore_from(markers, {("in", 0): 5})
    assert committed_past.outcomes_in_flight(("in", 0, 4), "R1:1") is None
    other_topic = MemoryDedupe()
    other_topic.restore_from(markers, {("repartition", 0): 0})
    assert other_topic.outcomes_in_flight(("in", 0, 4), "R1:1") is None
    restored = MemoryDedupe()
    restored.restore_from(markers, {("in", 0): 4})
    again = restored.outcomes_in_flight(("in", 0, 4), "R1:1")
    assert again is not None and orjson.loads(again[0])["status"] == "REQUESTED"
    # What the outcomes' step sent, less the event's own fields.
    assert again == [outcome_without_event(w.value or b"") for w in writer.steps[2]]
    assert restored.outcomes_in_flight(("in", 0, 4), "R1:2") is None
    assert restored.outcomes_in_flight(("in", 0, 5), "R1:1") is None
    restored.drop([0])
    assert restored.in_flight == {}
