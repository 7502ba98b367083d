"""The service on the real broker, in this process: topics, tables, DLQ, readiness (§1-§4, §8)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from service.core.models import MAX_EVENT_BYTES, ChannelSettings
from service.dev.broker import free_port
from service.runtime.compose import build_service
from service.runtime.service import FallbackService
from service.state.dedupe import PartitionedDedupe
from service.state.tables import Table, decode_channel, decode_sender_number
from tests.factories import SEND_NO, SENDER_KEY, event_dict
from tests.kafka_helpers import (
    Broker,
    Topics,
    committed,
    create_topics,
    prepare,
    producer,
    put,
    read,
    read_to_end,
    running,
    seed,
    values,
)
from tests.waiting import eventually, eventually_value

pytestmark = pytest.mark.broker


def sample(service: FallbackService, name: str, **labels: str) -> float:
    """A metric's current value, read through the registry's public API (0 when unset)."""
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_every_output_topic(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics)
    settings = topics.settings(bootstrap)
    async with running(settings):
        await put(
            bootstrap,
            topics.input,
            [
                ("R1:1", event_dict()),
                ("R2:1", event_dict(requestId="R2", content="가" * 60)),
                ("R3:1", event_dict(requestId="R3", senderKey="unknown")),
                ("R4:1", event_dict(requestId="R4", recipientNo="12")),
            ],
        )
        outcomes = values(await read(bootstrap, topics.events, 4))
        requests = await read(bootstrap, topics.output, 2)
    by_id = {o["fallbackId"]: o for o in outcomes}
    assert {k: (v["status"], v["reason"]) for k, v in by_id.items()} == {
        "R1:1": ("REQUESTED", None),
        "R2:1": ("REQUESTED", None),
        "R3:1": ("SKIPPED", "channel_not_configured"),
        "R4:1": ("REJECTED", "recipient_number_invalid"),
    }
    for record in requests:
        body = orjson.loads(record.value)
        assert record.key == body["fallbackId"].encode()
        assert dict(record.headers) == {"idempotency-key": record.key}
        assert body["sendNo"] == SEND_NO
    assert {orjson.loads(r.value)["type"] for r in requests} == {"SMS", "LMS"}
    events = await read_to_end(bootstrap, topics.events)
    assert all(r.key == orjson.loads(r.value)["fallbackId"].encode() for r in events)


async def test_malformed_records_go_to_the_dlq_untouched(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=1)
    oversized = orjson.dumps(event_dict(pad="x" * MAX_EVENT_BYTES))
    bad = [
        (b"k-json", b"{not json", "invalid_json"),
        (b"k-array", b"[1,2,3]", "invalid_event"),
        (b"k-event", orjson.dumps({"requestId": "R9"}), "invalid_event"),
        (b"k-type", orjson.dumps(event_dict(recipientSeq="1")), "invalid_event"),
        (b"k-big", oversized, "oversized"),
        (None, b"\xff\xfe\x00binary", "invalid_json"),
        (b"k-null", None, "invalid_json"),
    ]
    async with running(topics.settings(bootstrap)) as service:
        async with producer(bootstrap) as p:
            for key, value, _ in bad:
                await p.send_and_wait(topics.input, value, key=key, headers=[("trace", b"t-1")])
            await p.send_and_wait(topics.input, orjson.dumps(event_dict()), key=b"good")
        dead = await read(bootstrap, topics.dlq, len(bad))
        good = await read(bootstrap, topics.events, 1)
        await eventually(
            lambda: sample(service, "fallback_dead_letters_total", error="oversized") == 1
        )
    assert len(good) == 1
    assert [(r.key, r.value) for r in dead] == [(k, v) for k, v, _ in bad]
    for record, (_, _, error) in zip(dead, bad, strict=True):
        headers = dict(record.headers)
        assert headers["trace"] == b"t-1"  # the record's own headers are kept
        assert headers["x-fallback-error"] == error.encode()
        assert 0 < len(headers["x-fallback-error-detail"]) <= 1024
        assert headers["x-original-topic"] == topics.input.encode()
        assert headers["x-original-partition"] == b"0"
    assert [dict(r.headers)["x-original-offset"] for r in dead] == [
        str(i).encode() for i in range(len(bad))
    ]
    # Only well-formed events get an outcome.
    assert len(await read_to_end(bootstrap, topics.events)) == 1


async def test_tables_load_before_any_event_is_consumed(bootstrap: str, topics: Topics) -> None:
    await create_topics(bootstrap, topics)
    # The event is waiting before the channel even exists; the service must not see it first.
    await put(bootstrap, topics.input, [("R1:1", event_dict())])
    await seed(bootstrap, topics)
    service = build_service(topics.settings(bootstrap))
    assert service.readiness() == "loading channels, sender_numbers"
    await service.start()
    try:
        # Consuming; ready once its partitions are assigned and their dedupe state restored.
        assert service.readiness() in {
            None,
            "restoring the dedupe state of assigned partitions",
        }
        outcome = values(await read(bootstrap, topics.events, 1))[0]
        assert service.readiness() is None
    finally:
        await service.stop()
    assert outcome["status"] == "REQUESTED"
    assert service.readiness() == "consumer not running"


async def test_a_table_waits_for_its_topic_and_says_so_once(
    bootstrap: str, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"bootstrap_servers": bootstrap}
    present = Table("channels", topics.channels, decode_channel, options)
    missing = Table("sender_numbers", topics.senders, decode_sender_number, options)
    starting = asyncio.create_task(missing.start())
    await eventually(lambda: "waiting for topic" in caplog.text)
    await create_topics(bootstrap, topics, partitions=1)
    await asyncio.wait_for(starting, 20)
    await present.start()  # a topic that exists: no warning, even from a new consumer
    try:
        await asyncio.wait_for(asyncio.gather(present.wait_loaded(), missing.wait_loaded()), 20)
    finally:
        await present.stop()
        await missing.stop()
    warnings = [r.getMessage() for r in caplog.records if "waiting for topic" in r.getMessage()]
    assert warnings == [f"table sender_numbers: waiting for topic {topics.senders} to exist"]


async def test_a_restore_keeps_the_markers_of_uncommitted_records_in_its_last_offsets(
    bootstrap: str, topics: Topics
) -> None:
    await create_topics(bootstrap, topics, partitions=1)
    changelog = topics.settings(bootstrap).dedupe_topic_name
    outcome = b'{"fallbackId":"R25:1","status":"REQUESTED"}'
    stamp = "2026-11-26T10:00:00.000+09:00"
    markers: list[tuple[bytes | str | None, Any]] = [
        (f"R{i}:1", PartitionedDedupe.marker(f"R{i}:1", stamp, (topics.input, 0, i), [outcome]))
        for i in range(30)
    ]
    # Offset 30: a marker written before markers named their input record.
    markers.append(("old:1", orjson.dumps({"fallbackId": "old:1", "requestedAt": stamp})))
    await put(bootstrap, changelog, markers)

    async def restored(committed: int | None) -> PartitionedDedupe:
        dedupe = PartitionedDedupe(
            changelog, {"bootstrap_servers": bootstrap}, retention_seconds=86400, in_flight_limit=10
        )
        dedupe.start(1)
        await dedupe.restore([0], {TopicPartition(topics.input, 0): committed})
        assert len(dedupe) == 31
        return dedupe

    # Only the last 10 offsets (21-30) are looked at: a crash leaves a batch at the end.
    dedupe = await restored(5)
    assert sorted(offset for _, _, offset in dedupe.in_flight) == list(range(21, 30))
    # Kept less the event's own fields, which the record read again gives back.
    assert dedupe.outcomes_in_flight((topics.input, 0, 25), "R25:1") == [b'{"status":"REQUESTED"}']
    assert dedupe.outcomes_in_flight((topics.input, 0, 25), "R24:1") is None
    dedupe = await restored(25)
    assert sorted(offset for _, _, offset in dedupe.in_flight) == list(range(25, 30))
    assert (await restored(None)).in_flight.keys() == dedupe.in_flight.keys() | {
        (topics.input, 0, offset) for offset in range(21, 25)
    }
    assert (await restored(31)).in_flight == {}


async def test_settings_changes_apply_mid_stream(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=1, enabled=False)
    async with running(topics.settings(bootstrap)) as service:

        def channel() -> ChannelSettings | None:
            return service.channels.get(SENDER_KEY)

        async def step(seq: int) -> dict[str, object]:
            await put(bootstrap, topics.input, [(None, event_dict(recipientSeq=seq))])
            return values(await read(bootstrap, topics.events, seq))[-1]

        assert (await step(1))["reason"] == "fallback_disabled"
        await put(bootstrap, topics.channels, [(SENDER_KEY, {"enabled": True, "sendNo": SEND_NO})])
        await eventually(lambda: (c := channel()) is not None and c.enabled)
        assert (await step(2))["status"] == "REQUESTED"
        await put(bootstrap, topics.senders, [(SEND_NO, {"status": "BLOCKED"})])
        await eventually(lambda: service.sender_numbers.get(SEND_NO) == "BLOCKED")
        assert (await step(3))["reason"] == "sender_number_blocked"
        await put(bootstrap, topics.senders, [("02-1599-0000", None)])  # tombstone, dashed key
        await eventually(lambda: service.sender_numbers.get(SEND_NO) is None)
        assert (await step(4))["reason"] == "sender_number_unregistered"
        # An invalid record is ignored: the previous value stays in force.
        await put(bootstrap, topics.channels, [(SENDER_KEY, {"enabled": "yes"})])
        await eventually(
            lambda: sample(service, "fallback_table_invalid_records_total", table="channels") == 1
        )
        current = channel()
        assert current is not None and current.enabled
        await put(bootstrap, topics.channels, [(SENDER_KEY, None)])
        await eventually(lambda: channel() is None)
        # Every channel record was read: the seed, the change, the invalid one, the tombstone.
        await eventually(
            lambda: sample(service, "fallback_table_records_total", table="channels") == 4
        )
        assert (await step(5))["reason"] == "channel_not_configured"


async def test_duplicates_skipped_across_restart(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics)
    settings = topics.settings(bootstrap)
    async with running(settings):
        await put(bootstrap, topics.input, [("R1:1", event_dict())])
        await read(bootstrap, topics.events, 1)
    async with running(settings) as second:
        assert "R1:1" in second.requested
        # Re-published, under another key, so most likely on another partition.
        await put(bootstrap, topics.input, [("other-key", event_dict()), ("x", event_dict())])
        outcomes = values(await read(bootstrap, topics.events, 3))
    assert [(o["status"], o["reason"]) for o in outcomes[1:]] == [("SKIPPED", "duplicate")] * 2
    assert len(await read_to_end(bootstrap, topics.output)) == 1


async def test_duplicates_in_one_batch(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=1)
    await put(bootstrap, topics.input, [("k", event_dict())] * 5)
    async with running(topics.settings(bootstrap)):
        outcomes = values(await read(bootstrap, topics.events, 5))
    assert [o["status"] for o in outcomes] == ["REQUESTED"] + ["SKIPPED"] * 4
    assert len(await read_to_end(bootstrap, topics.output)) == 1


async def test_two_instances_split_partitions_without_duplicates(
    bootstrap: str, topics: Topics
) -> None:
    await prepare(bootstrap, topics, partitions=6)
    settings = topics.settings(bootstrap)
    async with running(settings) as a, running(settings) as b:

        def owned(s: FallbackService, topic: str) -> set[int]:
            consumer = s.subscriber.consumer
            found = consumer.assignment() if consumer else set()
            return {tp.partition for tp in found if tp.topic == topic}

        def split() -> bool:
            mine, theirs = owned(a, topics.input), owned(b, topics.input)
            return bool(mine and theirs and len(mine | theirs) == 6)

        await eventually(lambda: split() and a.readiness() is None and b.readiness() is None, 30)
        assert not owned(a, topics.input) & owned(b, topics.input)
        # Co-partitioned: each instance has the same numbers of the repartition topic.
        for s in (a, b):
            assert owned(s, settings.repartition_topic_name) == owned(s, topics.input)
        events = [event_dict(requestId=f"R{i}") for i in range(60)]
        await put(bootstrap, topics.input, [(f"R{i}:1", e) for i, e in enumerate(events)])
        await read(bootstrap, topics.events, 60)
        # The same events again, keyed differently so that most land on a partition that does
        # not own them: they are routed to the owner and skipped there.
        await put(bootstrap, topics.input, [(f"again-{i}", e) for i, e in enumerate(events)])
        outcomes = values(await read(bootstrap, topics.events, 120))

        def observed() -> bool:  # every batch is observed after its commit, a moment later
            total = sum(sample(s, "fallback_batch_records_sum") for s in (a, b))
            forwarded = sum(sample(s, "fallback_routed_total") for s in (a, b))
            return forwarded > 0 and total == 120 + forwarded

        await eventually(observed, 10, "both instances observed every batch")
        handled_a = sample(a, "fallback_batch_records_sum")
        handled_b = sample(b, "fallback_batch_records_sum")
        routed = sample(a, "fallback_routed_total") + sample(b, "fallback_routed_total")
        # Each instance remembers only the fallbacks of its own partitions (ask its metrics).
        for s in (a, b):
            mine = owned(s, topics.input)
            held = {p for p in range(6) if sample(s, "fallback_dedupe_entries", partition=str(p))}
            assert held <= mine
            for i in range(60):
                fid = f"R{i}:1"
                assert (fid in s.requested) == (s.requested.owner(fid.encode()) in mine)
        entries = sum(
            sample(s, "fallback_dedupe_entries", partition=str(p)) for s in (a, b) for p in range(6)
        )
    requests = values(await read_to_end(bootstrap, topics.output))
    assert sorted(r["fallbackId"] for r in requests) == sorted(f"R{i}:1" for i in range(60))
    assert sum(o["status"] == "SKIPPED" and o["reason"] == "duplicate" for o in outcomes) == 60
    assert handled_a > 0 and handled_b > 0
    assert routed > 0
    assert entries == 60


async def test_commits_follow_outputs(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=1)
    settings = topics.settings(bootstrap)
    await put(bootstrap, topics.input, [(None, event_dict(recipientSeq=i)) for i in range(1, 11)])
    async with running(settings):
        await read(bootstrap, topics.events, 10)
        # The commit follows the outcomes: it comes, and it covers all ten.
        await eventually_value(
            lambda: committed(bootstrap, settings.group_id, topics.input),
            lambda offsets: offsets == {0: 10},
            10,
        )


async def test_a_failing_batch_is_read_again_not_lost(
    bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    await prepare(bootstrap, topics, partitions=1)
    from service.pipeline.batch import Batch
    from service.pipeline.processor import Processor

    real = Processor.convert
    failures: list[int] = []

    def flaky(self: Processor, records: Sequence[ConsumerRecord], now: datetime) -> Batch:
        if not failures:
            failures.append(1)
            raise RuntimeError("injected failure")
        return real(self, records, now)

    monkeypatch.setattr(Processor, "convert", flaky)
    settings = topics.settings(bootstrap)
    await put(bootstrap, topics.input, [(None, event_dict(recipientSeq=i)) for i in (1, 2)])
    async with running(settings):
        outcomes = values(await read(bootstrap, topics.events, 2))
        await put(bootstrap, topics.input, [(None, event_dict(recipientSeq=3))])
        outcomes = values(await read(bootstrap, topics.events, 3))
        await eventually_value(
            lambda: committed(bootstrap, settings.group_id, topics.input),
            lambda offsets: offsets == {0: 3},
            10,
        )
    assert failures == [1]
    assert [o["fallbackId"] for o in outcomes] == ["R1:1", "R1:2", "R1:3"]
    assert await committed(bootstrap, settings.group_id, topics.input) == {0: 3}


async def test_a_rebalance_moves_the_state(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=4)
    settings = topics.settings(bootstrap)
    events = [(f"M{i}:1", event_dict(requestId=f"M{i}")) for i in range(40)]
    async with running(settings) as a:
        await put(bootstrap, topics.input, events)
        await read(bootstrap, topics.events, 40)
        async with running(settings) as b:  # b joins: half of a's partitions move to b
            await eventually(
                lambda: len(b.requested.states) == 2 and len(a.requested.states) == 2, 30
            )
            assert set(a.requested.states).isdisjoint(b.requested.states)
            # b restored the markers a wrote for the partitions it took over.
            moved = [
                fid for fid, _ in events if b.requested.owner(fid.encode()) in b.requested.states
            ]
            assert moved and all(fid in b.requested for fid in moved)
            await put(bootstrap, topics.input, events)  # the same events, the same keys
            outcomes = values(await read(bootstrap, topics.events, 80))
    assert sum(o["reason"] == "duplicate" for o in outcomes) == 40
    assert len(await read_to_end(bootstrap, topics.output)) == 40


async def test_markers_of_the_previous_layout_are_kept(bootstrap: str, topics: Topics) -> None:
    """Before sharding, markers were written keyed by fallbackId with the default partitioner
    to a changelog partitioned like the input: that is the owner partition, so an upgraded
    service finds every one of them."""
    await prepare(bootstrap, topics, partitions=3)
    settings = topics.settings(bootstrap)
    from service.kafka.admin import ensure_internal_topic

    await ensure_internal_topic(
        settings, "FALLBACK_DEDUPE_TOPIC", settings.dedupe_topic_name, partitions=3, config={}
    )
    old = [f"OLD{i}:1" for i in range(30)]
    await put(
        bootstrap,
        settings.dedupe_topic_name,
        [(fid, {"fallbackId": fid, "requestedAt": "2026-11-25T09:00:00.000+09:00"}) for fid in old],
    )
    async with running(settings) as service:
        assert all(fid in service.requested for fid in old)
        await put(
            bootstrap,
            topics.input,
            [(f"re-{i}", event_dict(requestId=f"OLD{i}")) for i in range(30)],
        )
        outcomes = values(await read(bootstrap, topics.events, 30))
    assert [o["reason"] for o in outcomes] == ["duplicate"] * 30
    assert await read_to_end(bootstrap, topics.output) == []


async def test_header_values_that_are_not_utf8_lose_nothing(bootstrap: str, topics: Topics) -> None:
    """A header value that is not UTF-8, or null, used to fail the whole batch before the
    handler ran (records lost); now every record ends as an outcome or a dead letter, and a dead
    letter keeps every header as it came."""
    await prepare(bootstrap, topics, partitions=1)
    async with running(topics.settings(bootstrap)):
        async with producer(bootstrap) as p:
            await p.send_and_wait(topics.input, orjson.dumps(event_dict(recipientSeq=1)))
            await p.send_and_wait(
                topics.input,
                orjson.dumps(event_dict(recipientSeq=2)),
                headers=[("trace", b"\xff\xfe"), ("ok", b"fine")],
            )
            await p.send_and_wait(
                topics.input, orjson.dumps(event_dict(recipientSeq=3)), headers=[("x", None)]
            )
            await p.send_and_wait(topics.input, b"{broken", headers=[("trace", b"\xff\xfe")])
            await p.send_and_wait(topics.input, orjson.dumps(event_dict(recipientSeq=4)))
        outcomes = values(await read(bootstrap, topics.events, 4))
        dead = await read(bootstrap, topics.dlq, 1)
    assert sorted(o["fallbackId"] for o in outcomes) == ["R1:1", "R1:2", "R1:3", "R1:4"]
    assert {o["status"] for o in outcomes} == {"REQUESTED"}
    assert len(dead) == 1 and dead[0].value == b"{broken"
    assert dict(dead[0].headers)["trace"] == b"\xff\xfe"


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_are_read(bootstrap: str, topics: Topics, codec: str) -> None:
    await prepare(bootstrap, topics, partitions=1)
    from aiokafka import AIOKafkaProducer

    compressed = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=50
    )
    await compressed.start()
    try:
        futures = [
            await compressed.send(topics.input, orjson.dumps(event_dict(recipientSeq=i)))
            for i in range(1, 21)
        ]
        await asyncio.gather(*futures)
    finally:
        await compressed.stop()
    async with running(topics.settings(bootstrap)):
        outcomes = values(await read(bootstrap, topics.events, 20))
    assert len({o["fallbackId"] for o in outcomes}) == 20


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_log_line_carries_a_whole_phone_number(
    bootstrap: str, topics: Topics, tmp_path: Path, log_format: str
) -> None:
    """A full run of `fallback-service run` at DEBUG with phone numbers in every wrong place:
    no line of its output carries one whole."""
    import re

    from tests.processes import service_process, wait_ready

    numbers = ["010-3456-7890", "02-9876-5432", "010-5555-4444", "010-1234-5678"]
    await prepare(bootstrap, topics, partitions=1)
    # A channel record that does not validate, a sender-number key that is not a number.
    bad_channel = {"enabled": "yes", "sendNo": "02-9876-5432"}
    await put(bootstrap, topics.channels, [("sk-bad", bad_channel)])
    await put(bootstrap, topics.senders, [("010-5555-4444x", {"status": "ACTIVE"})])
    port = free_port()
    env = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_LOG_LEVEL="DEBUG",
        FALLBACK_LOG_FORMAT=log_format,
        FALLBACK_LOG_OUTCOMES="true",
        # Secrets in the configuration (unused by the kafka sink) must not show either.
        FALLBACK_NHN_SECRET_KEY="nhn-secret-must-not-show",
        FALLBACK_KAFKA_SSL_KEY_PASSWORD="tls-secret-must-not-show",
    )
    log = tmp_path / "service.log"
    with service_process(env, output=log) as p:
        await asyncio.to_thread(wait_ready, port, p)
        await put(
            bootstrap,
            topics.input,
            [
                ("a", event_dict(resendParameter={"resendType": "010-3456-7890"})),
                ("b", event_dict(recipientSeq=2)),
                ("c", event_dict(recipientSeq=3, recipientNo=1034567890)),
                ("d", b'{"recipientNo": "010-3456-7890", "content": '),
            ],
        )
        await read(bootstrap, topics.events, 1)
        await read(bootstrap, topics.dlq, 3)
        await eventually(  # the log lines follow the commit
            lambda: "dead-lettered" in log.read_text() and "010****5678" in log.read_text()
        )
        p.send_signal(signal.SIGTERM)
        await asyncio.to_thread(p.wait, 15)
    lines = log.read_text().splitlines()
    assert len(lines) > 10
    assert any("010****5678" in line for line in lines)  # the outcome line, masked
    assert any("dead-lettered" in line for line in lines)
    assert not any("must-not-show" in line for line in lines)
    digits = {re.sub(r"\D", "", n) for n in numbers}
    for line in lines:
        for found in re.findall(r"\d[\d\-. ]{6,}\d", line):
            assert re.sub(r"\D", "", found) not in digits, line


async def test_an_input_record_too_large_for_the_dlq_is_dead_lettered_cut(
    broker: Broker, topics: Topics
) -> None:
    """A 1.1 MB record used to stall every partition: its dead letter was larger than the DLQ
    takes and was retried forever. Now it is cut to the DLQ topic's max.message.bytes."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import NewTopic

    from service.kafka.admin import admin_client

    bootstrap = broker.bootstrap
    settings = topics.settings(bootstrap)
    async with admin_client(settings.kafka()) as admin:
        await admin.create_topics(
            [
                NewTopic(topics.input, 1, 1, topic_configs={"max.message.bytes": "2097152"}),
                NewTopic(topics.dlq, 1, 1, topic_configs={"max.message.bytes": "300000"}),
            ]
        )
    await prepare(bootstrap, topics, partitions=1)
    huge = b'{"requestId": "' + b"x" * 1_100_000 + b'"}'
    big = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000)
    await big.start()
    try:
        await big.send_and_wait(topics.input, huge, key=b"huge")
        await big.send_and_wait(topics.input, orjson.dumps(event_dict()), key=b"next")
    finally:
        await big.stop()
    async with running(settings):
        outcomes = values(await read(bootstrap, topics.events, 1))
        dead = await read(bootstrap, topics.dlq, 1)
    assert outcomes[0]["fallbackId"] == "R1:1"  # the partition went on
    letter = dead[0]
    headers = dict(letter.headers)
    assert headers["x-fallback-error"] == b"oversized"
    assert headers["x-fallback-value-truncated"] == b"true"
    assert headers["x-fallback-original-size"] == str(len(huge)).encode()
    assert headers["x-original-offset"] == b"0"
    assert huge.startswith(letter.value) and len(letter.value) < len(huge)
    if broker.name == "kafka":  # the DLQ topic's own limit was read and kept
        assert len(letter.value) < 300_000
