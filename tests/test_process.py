"""`fallback-service run` as a process: crash, restart, graceful stop, HTTP, configuration."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import httpx
import pytest

from service.dev.broker import free_port
from tests.factories import event_dict
from tests.kafka_helpers import (
    Broker,
    Topics,
    committed,
    prepare,
    put,
    read,
    read_to_end,
    running,
    values,
)
from tests.processes import PROGRAMS, service_process, wait_ready
from tests.waiting import eventually_value

pytestmark = pytest.mark.broker


async def test_killed_between_publish_and_commit(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=1)
    port = free_port()
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port))
    with service_process(env, sys.executable, str(PROGRAMS / "crash_before_commit.py")) as p:
        await asyncio.to_thread(wait_ready, port, p)
        await put(bootstrap, topics.input, [("R1:1", event_dict())])
        assert await asyncio.to_thread(p.wait, 30) == -signal.SIGKILL
    # Its outputs were acknowledged, its input offset was not committed.
    assert len(await read(bootstrap, topics.output, 1)) == 1
    assert values(await read(bootstrap, topics.events, 1))[0]["status"] == "REQUESTED"
    group = env["FALLBACK_GROUP_ID"]
    assert (await committed(bootstrap, group, topics.input))[0] is None
    # After restart the event comes back: its outcome is written again, unchanged (the marker
    # names this very record), and no second SMS is requested.
    async with running(topics.settings(bootstrap)):
        await read(bootstrap, topics.events, 2)
    # Stopped (the batch in flight finished first): everything it wrote is there to read.
    outcomes = await read_to_end(bootstrap, topics.events)
    assert len(outcomes) == 2 and outcomes[0].value == outcomes[1].value
    assert values(outcomes)[0]["status"] == "REQUESTED"
    assert len(await read_to_end(bootstrap, topics.output)) == 1
    assert (await committed(bootstrap, group, topics.input))[0] == 1
    # Re-published later under another key, the same fallback is a duplicate as ever.
    async with running(topics.settings(bootstrap)):
        await put(bootstrap, topics.input, [("again", event_dict())])
        outcomes = await read(bootstrap, topics.events, 3)
    assert [(o["status"], o["reason"]) for o in values(outcomes)][2] == ("SKIPPED", "duplicate")
    assert len(await read_to_end(bootstrap, topics.output)) == 1


async def test_killed_between_markers_and_outcomes(bootstrap: str, topics: Topics) -> None:
    """§7: the event's one outcome is REQUESTED, though a crash left its marker without it."""
    await prepare(bootstrap, topics, partitions=1)
    port = free_port()
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port))
    # Both events wait before the service starts, so that they make one batch.
    await put(
        bootstrap, topics.input, [("R1:1", event_dict()), ("R1:2", event_dict(recipientSeq=2))]
    )
    with service_process(env, sys.executable, str(PROGRAMS / "crash_after_markers.py")) as p:
        assert await asyncio.to_thread(p.wait, 30) == -signal.SIGKILL
    # The requests and the markers were acknowledged; no outcome was written, nothing committed.
    assert len(await read(bootstrap, topics.output, 2)) == 2
    assert await read_to_end(bootstrap, topics.events) == []
    assert (await committed(bootstrap, env["FALLBACK_GROUP_ID"], topics.input))[0] is None
    async with running(topics.settings(bootstrap)):
        await read(bootstrap, topics.events, 2)
    # Stopped: what it wrote is all there is, so reading to the end shows any extra outcome.
    outcomes = values(await read_to_end(bootstrap, topics.events))
    assert sorted((o["fallbackId"], o["status"], o["reason"]) for o in outcomes) == [
        ("R1:1", "REQUESTED", None),
        ("R1:2", "REQUESTED", None),
    ]
    assert len(await read_to_end(bootstrap, topics.output)) == 2  # nothing sent again


async def test_graceful_stop_on_sigterm(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics, partitions=2)
    port = free_port()
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port), FALLBACK_BATCH_MAX_RECORDS="50")
    count = 3000
    await put(
        bootstrap, topics.input, [(f"R{i}:1", event_dict(requestId=f"R{i}")) for i in range(count)]
    )
    with service_process(env) as p:
        seen = await asyncio.to_thread(wait_ready, port, p)
        await read(bootstrap, topics.events, 100)  # in the middle of the stream
        p.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = await asyncio.to_thread(p.wait, 15)
        stopped_in = time.monotonic() - began
        output = p.stdout.read().decode()  # type: ignore[union-attr]
    assert code == 0, output
    assert stopped_in < 10
    assert "stopped" in output
    # Before it was ready, /readyz said so (503) and never answered anything else.
    assert seen.count(200) == 1 and set(seen[:-1]) <= {503}
    # Everything committed has its outcome; the rest is processed after a restart,
    # and no fallback is requested twice.
    group = env["FALLBACK_GROUP_ID"]
    offsets = await committed(bootstrap, group, topics.input)
    inputs = await read_to_end(bootstrap, topics.input)
    done = {r.key for r in inputs if r.offset < (offsets.get(r.partition) or 0)}
    written = {r.key for r in await read_to_end(bootstrap, topics.events)}
    assert done and done <= written
    async with running(topics.settings(bootstrap)):
        outcomes = values(await read(bootstrap, topics.events, count, within=60))
    assert {o["fallbackId"] for o in outcomes} == {f"R{i}:1" for i in range(count)}
    requests = values(await read_to_end(bootstrap, topics.output))
    assert len(requests) == len({r["fallbackId"] for r in requests}) == count


async def test_http_endpoints(bootstrap: str, topics: Topics) -> None:
    await prepare(bootstrap, topics)
    port = free_port()
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port), FALLBACK_LOG_OUTCOMES="true")
    with service_process(env) as p:
        await asyncio.to_thread(wait_ready, port, p)
        await put(bootstrap, topics.input, [("R1:1", event_dict()), ("x", b"junk")])
        await read(bootstrap, topics.events, 1)
        await read(bootstrap, topics.dlq, 1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).text == "ready\n"
            counted = 'fallback_outcomes_total{reason="",status="REQUESTED"} 1.0'
            # Counted once committed, a moment after the outcome is readable.
            answer = await eventually_value(
                lambda: client.get("/metrics"), lambda got: counted in got.text, 10, counted
            )
            metrics = answer.text
            assert (await client.get("/nope")).status_code == 404
        p.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(p.wait, 15) == 0
        log = p.stdout.read().decode()  # type: ignore[union-attr]
    assert 'fallback_outcomes_total{reason="",status="REQUESTED"} 1.0' in metrics
    assert 'fallback_dead_letters_total{error="invalid_json"} 1.0' in metrics
    assert 'fallback_messages_total{type="SMS"} 1.0' in metrics
    assert 'fallback_table_entries{table="channels"} 1.0' in metrics
    assert 'fallback_table_records_total{table="channels"} 1.0' in metrics
    assert "fallback_processing_seconds_bucket" in metrics
    assert "faststream_received_messages_total" in metrics
    assert "R1:1 REQUESTED SMS 28B to 010****5678" in log
    assert "01012345678" not in log


def test_bad_configuration_stops_startup() -> None:
    with service_process({"FALLBACK_LMS_MAX_BYTES": "lots"}) as p:
        code = p.wait(30)
        output = p.stdout.read().decode()  # type: ignore[union-attr]
    assert code == 2
    assert "FALLBACK_LMS_MAX_BYTES" in output


def test_secrets_never_printed() -> None:
    env = {
        "FALLBACK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FALLBACK_KAFKA_SASL_USERNAME": "u",
        "FALLBACK_KAFKA_SASL_PASSWORD": "s3cret-pw",
        "FALLBACK_HTTP_PORT": "99999",
    }
    with service_process(env) as p:
        output = p.stdout.read().decode()  # type: ignore[union-attr]
        assert p.wait(30) == 2
    assert "FALLBACK_HTTP_PORT" in output
    assert "s3cret-pw" not in output


async def test_a_restarted_static_member_takes_its_partitions_back_at_once(kafka: Broker) -> None:
    """KIP-345: killed and started again under the same FALLBACK_KAFKA_GROUP_INSTANCE_ID, a
    replica is given its partitions without waiting out its predecessor's session (45 s here),
    and requests nothing twice."""
    topics = Topics.fresh(kafka.overrides | {"processing_guarantee": "exactly-once"})
    bootstrap = kafka.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    port = free_port()
    env = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_KAFKA_SESSION_TIMEOUT_MS="45000",
        FALLBACK_KAFKA_HEARTBEAT_INTERVAL_MS="3000",
        FALLBACK_KAFKA_GROUP_INSTANCE_ID="replica-0",
    )
    await put(bootstrap, topics.input, [("S1:1", event_dict(requestId="S1"))])
    with service_process(env) as first:
        await asyncio.to_thread(wait_ready, port, first)
        await read(bootstrap, topics.output, 1)
        first.kill()
        first.wait()
    began = time.monotonic()
    with service_process(env) as second:
        await asyncio.to_thread(wait_ready, port, second, 40)
        await put(bootstrap, topics.input, [("S2:1", event_dict(requestId="S2"))])
        await put(bootstrap, topics.input, [("S1:1", event_dict(requestId="S1"))])
        outcomes = values(await read(bootstrap, topics.events, 3, within=40))
        took = time.monotonic() - began
    # Dynamic membership would have kept both partitions unassigned for the whole session.
    assert took < 30, f"the partitions came back after {took:.0f}s"
    assert [(o["fallbackId"], o["status"], o["reason"]) for o in outcomes][1:] in (
        [("S2:1", "REQUESTED", None), ("S1:1", "SKIPPED", "duplicate")],
        [("S1:1", "SKIPPED", "duplicate"), ("S2:1", "REQUESTED", None)],
    )
    assert sorted(r["fallbackId"] for r in values(await read_to_end(bootstrap, topics.output))) == [
        "S1:1",
        "S2:1",
    ]
