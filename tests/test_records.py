"""Header keys that are not UTF-8 (§8): read, never a failed fetch; written back escaped."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords

from service.compat import TolerantMemoryRecords
from service.pipeline.outputs import header_key_for_output
from tests.factories import event_dict
from tests.fakes import BAD, PY_BUILDER, RawKey, misbehaving_producer
from tests.kafka_helpers import Broker, Topics, create_topics, read, running, seed, values


def batch(records: list[tuple[bytes, list[tuple[str, bytes]]]], codec: int = 0) -> bytes:
    builder = PY_BUILDER(2, codec, 0, -1, -1, -1, 1 << 20)
    for offset, (value, headers) in enumerate(records):
        builder.append(offset, 1_700_000_000_000, None, value, headers)
    return bytes(builder.build())


@pytest.mark.parametrize("codec", [0, 1, 3], ids=["none", "gzip", "lz4"])
def test_a_batch_with_a_non_utf8_header_key_is_read_whole(codec: int) -> None:
    data = batch(
        [
            (b"first", [("ok", b"1")]),
            (b"second", [(RawKey(BAD), b"v"), ("ok", b"2")]),
            (b"third", []),
        ],
        codec,
    )
    # aiokafka's own reader refuses the batch: that is what stalled partitions.
    with pytest.raises(UnicodeDecodeError):
        list(MemoryRecords(data).next_batch())
    records = TolerantMemoryRecords(data)
    got = list(records.next_batch())
    assert [r.value for r in got] == [b"first", b"second", b"third"]
    assert [r.offset for r in got] == [0, 1, 2]
    key, value = got[1].headers[0]
    assert key.encode("utf-8", "surrogateescape") == BAD and value == b"v"
    assert got[1].headers[1] == ("ok", b"2")
    assert not records.has_next()


def test_good_batches_pass_through_aiokafkas_reader() -> None:
    data = batch([(b"a", [("k", b"v")])]) + batch([(b"b", [])])
    records = TolerantMemoryRecords(data)
    first, second = records.next_batch(), records.next_batch()
    assert [r.value for r in first] == [b"a"] and [r.value for r in second] == [b"b"]
    assert first.base_offset == 0 and not first.is_control_batch
    assert records.next_batch() is None


def test_escaped_keys_are_written_as_text() -> None:
    key = BAD.decode("utf-8", "surrogateescape")
    assert header_key_for_output(key) == "\\xff\\xfetrace"
    assert header_key_for_output("trace-id") == "trace-id"
    assert header_key_for_output("추적") == "추적"


@pytest.mark.broker
async def test_the_service_reads_past_non_utf8_header_keys(tansu: Broker) -> None:
    topics = Topics.fresh(tansu.overrides)
    await create_topics(tansu.bootstrap, topics, partitions=1)
    await seed(tansu.bootstrap, topics)
    async with running(topics.settings(tansu.bootstrap)):
        with misbehaving_producer():
            producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap, linger_ms=50)
            await producer.start()
            try:
                sends = [
                    await producer.send(
                        topics.input,
                        orjson.dumps(event_dict(requestId=f"H{i}")),
                        key=f"H{i}:1".encode(),
                        headers=[(RawKey(BAD), b"x")] if i == 1 else [("ok", b"1")],
                    )
                    for i in range(3)
                ]
                sends.append(
                    await producer.send(topics.input, b"not json", headers=[(RawKey(BAD), b"y")])
                )
                await asyncio.gather(*sends)
            finally:
                await producer.stop()
        outcomes = values(await read(tansu.bootstrap, topics.events, 3))
        [dead] = await read(tansu.bootstrap, topics.dlq, 1)
    assert sorted(o["fallbackId"] for o in outcomes) == ["H0:1", "H1:1", "H2:1"]
    assert {o["status"] for o in outcomes} == {"REQUESTED"}
    assert dead.value == b"not json"
    assert ("\\xff\\xfetrace", b"y") in list(dead.headers)
