"""The composition root: `build_service` wires what it is given, and real adapters otherwise."""

from __future__ import annotations

from service.config import load_settings
from service.kafka.writer import AcknowledgedWriter
from service.runtime.compose import build_service
from service.sinks.kafka import KafkaSink
from service.sinks.memory import ListSink
from tests.factories import NOON_KST
from tests.fakes import RecordingWriter


async def test_fakes_replace_the_adapters() -> None:
    sink, writer = ListSink(), RecordingWriter()
    service = build_service(load_settings(), sink=sink, writer=writer, clock=lambda: NOON_KST)
    assert service.processor.sink is sink and service.sink is sink
    assert service.processor.writer is writer and service.writer is writer
    assert service.processor.clock() == NOON_KST
    # Nothing is started by building: not ready, tables not loading yet.
    assert service.readiness() == "loading channels, sender_numbers"


async def test_defaults_are_the_kafka_sink_on_the_at_least_once_writer() -> None:
    settings = load_settings(output_topic="out", group_id="g")
    service = build_service(settings)
    assert isinstance(service.writer, AcknowledgedWriter)
    assert isinstance(service.sink, KafkaSink)
    assert service.sink.writer is service.writer and service.sink.topic == "out"
    assert service.requested.topic == "g.dedupe"
    # The processor reads the live table dicts, so table updates reach it without copying.
    assert service.processor.channels is service.channels.entries
    assert service.processor.sender_numbers is service.sender_numbers.entries


async def test_the_consumer_gets_the_fetch_wait_setting() -> None:
    # A fetch held for quiet partitions delays records arriving on the others (issue 13).
    service = build_service(load_settings(kafka_fetch_max_wait_ms=75))
    assert service.subscriber._connection_args["fetch_max_wait_ms"] == 75
    assert load_settings().kafka_fetch_max_wait_ms == 50
