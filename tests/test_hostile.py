"""Hostile input on a real broker (§8): a seeded mix of bad bytes, bad JSON, wrong types,
boundary sizes, hostile headers and every codec. Every record ends as exactly one outcome or one
dead letter, dead letters keep key and value (or say they were cut), and valid events published
after them are processed: nothing lost, nothing stalled."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from service.kafka.admin import admin_client
from tests.factories import SEND_NO, SENDER_KEY, event_dict
from tests.fakes import BAD, RawKey, misbehaving_producer
from tests.kafka_helpers import (
    Broker,
    Topics,
    prepare,
    producer,
    put,
    read,
    read_to_end,
    running,
    values,
)
from tests.waiting import eventually, eventually_value

pytestmark = pytest.mark.broker

Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def _valid(rng: random.Random, i: int, **fields: Any) -> bytes:
    data = {"requestId": f"H{i}", "recipientSeq": rng.randint(1, 3), **fields}
    return orjson.dumps(event_dict(**data))


def hostile_records(seed_value: int = 20261125) -> list[Record]:
    """(class, key, value, headers) for each record: the classes of the issue, seeded."""
    rng = random.Random(seed_value)
    made: list[Record] = []
    for i in range(6):
        made.append(("random bytes", None, rng.randbytes(rng.randint(0, 300)), []))
        made.append(("invalid utf-8", b"k", b'{"requestId": "\xff\xfe", "x": 1}', []))
        made.append(("lone surrogate", None, b'{"requestId": "\\ud800", "recipientSeq": 1}', []))
        made.append(("deep nesting", None, b"[" * (1000 + i) + b"]" * (1000 + i), []))
        made.append(("NaN", None, b'{"requestId": NaN, "recipientSeq": Infinity}', []))
        made.append(("BOM", None, b"\xef\xbb\xbf" + _valid(rng, 100 + i), []))
        made.append(("trailing garbage", None, _valid(rng, 200 + i) + b" }garbage", []))
        made.append(("wrong types", None, _valid(rng, 300 + i, recipientSeq="one"), []))
        made.append(("null value", b"tomb", None, []))
        made.append(("empty", b"", b"", []))
        made.append(("array", None, b"[1, 2, 3]", []))
        made.append(("non-utf8 header value", None, _valid(rng, 400 + i), [("trace", b"\xff\xfe")]))
        made.append(("null header value", None, _valid(rng, 500 + i), [("x", None)]))
        made.append(("non-utf8 header key", None, _valid(rng, 600 + i), [(RawKey(BAD), b"v")]))
        made.append(
            (
                "forged headers",
                b"forged",
                b"{broken",
                [("x-fallback-error", b"forged"), ("x-original-offset", b"999999")],
            )
        )
        made.append(("valid", None, _valid(rng, 700 + i), [("ok", b"1")]))
    for size in (65_536, 65_537):
        content = "가" * ((size - 300) // 3)
        value = orjson.dumps(event_dict(requestId=f"S{size}", content=content))
        made.append((f"{size} bytes", None, value.ljust(size)[:size], []))
    made.append(("1.1 MB", b"huge", b'{"requestId": "' + b"x" * 1_100_000 + b'"}', []))
    rng.shuffle(made)
    return made


async def test_every_hostile_record_ends_as_one_outcome_or_one_dead_letter(
    tansu: Broker,
) -> None:
    topics = Topics.fresh(tansu.overrides)
    bootstrap = tansu.bootstrap
    settings = topics.settings(bootstrap, log_outcomes=False)
    async with admin_client(settings.kafka()) as admin:
        await admin.create_topics(
            [NewTopic(topics.input, 1, 1, topic_configs={"max.message.bytes": "2097152"})]
        )
    await prepare(bootstrap, topics, partitions=1)
    records = hostile_records()
    after = [orjson.dumps(event_dict(requestId=f"AFTER{i}")) for i in range(5)]
    async with running(settings) as service:
        with misbehaving_producer():
            for codec in ("lz4", "zstd", "snappy", None):
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    compression_type=codec,
                    max_request_size=4_000_000,
                    linger_ms=20,
                )
                await producer.start()
                try:
                    part = records[("lz4", "zstd", "snappy", None).index(codec) :: 4]
                    sends = [
                        await producer.send(topics.input, value, key=key, headers=headers)
                        for _, key, value, headers in part
                    ]
                    await asyncio.gather(*sends)
                finally:
                    await producer.stop()
        await with_after_producer(bootstrap, topics.input, after)
        total = len(records) + len(after)

        # Each record: one outcome or one dead letter; read until the last valid one is in.
        async def everything() -> tuple[list[Any], list[Any]]:
            events = [orjson.loads(r.value) for r in await read_to_end(bootstrap, topics.events)]
            return events, await read_to_end(bootstrap, topics.dlq)

        outcomes, dead = await eventually_value(
            everything, lambda found: len(found[0]) + len(found[1]) >= total, 60, "every record"
        )
        assert service.readiness() is None and not service.failed.is_set()
    classes = Counter(c for c, *_ in records)
    print(f"\nhostile classes: {dict(classes)}; outcomes {len(outcomes)}, dead letters {len(dead)}")
    assert len(outcomes) + len(dead) == total
    offsets = [int(dict(d.headers)["x-original-offset"]) for d in dead]
    assert len(set(offsets)) == len(offsets)  # one dead letter per record
    ids = Counter(o["fallbackId"] for o in outcomes)
    assert all(f"AFTER{i}:1" in ids for i in range(5))  # valid events after them: processed
    for letter in dead:
        headers = dict(letter.headers)
        # The service's headers win over forged ones, once each.
        assert [k for k, _ in letter.headers].count("x-fallback-error") == 1
        assert headers["x-fallback-error"] != b"forged"
        sent = [r[2] or b"" for r in records if r[1] == letter.key]
        if headers.get("x-fallback-value-truncated") == b"true":
            assert any(v.startswith(letter.value or b"") for v in sent)
        else:
            assert (letter.value or b"") in sent  # key and value bytes as they came


async def with_after_producer(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Valid events published after the hostile ones."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"AFTER{i}:1".encode())
    finally:
        await producer.stop()


async def test_settings_churn_under_load_every_outcome_matches_a_state_that_existed(
    tansu: Broker,
) -> None:
    """The channel's settings are rewritten every 20 ms while 1,500 events flow: each request
    and outcome matches one whole settings state, never a mix of two."""
    topics = Topics.fresh(tansu.overrides)
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    await put(bootstrap, topics.senders, [("15880000", {"status": "ACTIVE"})])
    states = [
        {"enabled": True, "sendNo": SEND_NO, "title": "state A"},
        {"enabled": False, "sendNo": SEND_NO, "title": "state B"},
        {"enabled": True, "sendNo": "15880000", "title": "state C"},
    ]
    allowed = {(SEND_NO, "state A"), ("15880000", "state C")}
    stop = asyncio.Event()
    written = 0

    async def churn() -> None:
        nonlocal written
        async with producer(bootstrap) as p:
            while not stop.is_set():
                state = states[written % len(states)]
                await p.send_and_wait(topics.channels, orjson.dumps(state), key=SENDER_KEY.encode())
                written += 1
                await asyncio.sleep(0.02)

    count = 1500
    titles = {state["title"] for state in states}
    async with running(topics.settings(bootstrap, log_outcomes=False)) as service:
        churner = asyncio.create_task(churn())

        # The events start once the churn has replaced the seeded channel in the service's table:
        # before that the seeded state is the one that exists, and it is none of the three.
        def churned() -> bool:
            channel = service.channels.entries.get(SENDER_KEY)
            return channel is not None and channel.title in titles

        await eventually(churned, 20, "the churn reached the service's table", every=0.01)
        async with producer(bootstrap) as p:
            for i in range(count):
                value = event_dict(requestId=f"C{i}", content="가" * 60 + f" {i}")
                await p.send(topics.input, orjson.dumps(value), key=f"C{i}:1".encode())
                if i % 100 == 0:
                    await asyncio.sleep(0.05)
        outcomes = values(await read(bootstrap, topics.events, count, within=60))
        stop.set()
        await churner
        requests = values(await read_to_end(bootstrap, topics.output))
    assert written > 20
    assert len({o["fallbackId"] for o in outcomes}) == count
    statuses = Counter((o["status"], o["reason"]) for o in outcomes)
    assert set(statuses) <= {("REQUESTED", None), ("SKIPPED", "fallback_disabled")}
    assert statuses[("REQUESTED", None)] == len(requests)
    seen = Counter((r["sendNo"], r["title"]) for r in requests)
    assert set(seen) <= allowed, seen
    print(f"\nsettings churn: {written} writes, outcomes {dict(statuses)}, requests {dict(seen)}")
