"""The group consumer: the FastStream subscriber that reads the input, and one handle over
aiokafka's consumer for the runtime (assignment, seeks, pause, committed offsets, lag)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage

from service.compat import tolerant_headers
from service.config import ProcessingGuarantee, Settings
from service.pipeline.seams import Partition

log = logging.getLogger("fallback.consumer")


async def _raw_records(message: StreamMessage[Any]) -> Any:
    # Hand the handler aiokafka's records as they are: no per-message decoding or injection.
    return message.raw_message


def subscribe(
    broker: KafkaBroker,
    settings: Settings,
    listener: ConsumerRebalanceListener,
    handler: Callable[[tuple[Any, ...]], Awaitable[None]],
) -> Any:
    """Subscribe `handler` to batches of the input and repartition topics; the subscriber."""
    exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
    # With delivery results on, their topic too: partition p of it holds (with the default
    # partitioner and as many partitions) the results of the fallbacks partition p owns.
    results = (settings.results_topic,) if settings.delivery_results else ()
    subscriber = broker.subscriber(
        settings.input_topic,
        # Events that arrived on a partition that does not own them come back here, to the
        # same partition number as their owner; the range assignor gives partition p of both
        # topics to the same member (co-partitioning, as Kafka Streams does).
        settings.repartition_topic_name,
        *results,
        partition_assignment_strategy=(RangePartitionAssignor,),
        group_id=settings.group_id,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        listener=listener,
        parser=tolerant_headers,
        decoder=_raw_records,
        title="AlimTalk failure events",
        description="Contract §2: one event per recipient whose AlimTalk delivery failed, "
        "key fallbackId ({requestId}:{recipientSeq}); events forwarded to the partition that "
        "owns their fallbackId arrive on the repartition topic.",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        group_instance_id=settings.kafka_group_instance_id,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
    )
    subscriber(handler)
    return subscriber


class GroupConsumer:
    """The running group consumer, or nothing yet: every call is harmless before it starts.

    `find` returns aiokafka's consumer (FastStream's `subscriber.consumer`) or None.
    """

    def __init__(self, find: Callable[[], Any]) -> None:
        self._find = find

    @property
    def running(self) -> Any:
        return self._find()

    def assignment(self) -> Collection[Partition]:
        consumer = self._find()
        return () if consumer is None else consumer.assignment()

    def seek(self, targets: Mapping[Partition, int]) -> None:
        consumer = self._find()
        if consumer is None:
            return
        for tp, offset in targets.items():
            try:
                consumer.seek(TopicPartition(*tp), offset)
            except Exception as exc:  # a partition revoked meanwhile: its next owner reads it
                log.warning("rewinding %s[%d]: %s", tp[0], tp[1], exc)

    def pause(self) -> None:
        consumer = self._find()
        if consumer is not None:
            consumer.pause(*consumer.assignment())

    def resume(self) -> None:
        consumer = self._find()
        if consumer is not None:
            consumer.resume(*consumer.paused())

    async def committed(self, partitions: Iterable[Partition]) -> dict[Partition, int | None]:
        """The group's committed offset of each of `partitions` (None: never committed).

        Empty when the group coordinator cannot say (or before the consumer runs).
        """
        consumer = self._find()
        if consumer is None:
            return {}
        ordered = sorted(partitions)
        try:
            found = await asyncio.gather(
                *(consumer.committed(TopicPartition(*tp)) for tp in ordered)
            )
        except KafkaError as exc:
            log.warning("committed offsets unavailable for the restore: %s", exc)
            return {}
        return dict(zip(ordered, found, strict=True))

    async def lag(self) -> dict[Partition, int]:
        """Records between the position and the end of each assigned partition (those whose
        end and position are known now)."""
        consumer = self._find()
        if consumer is None:
            return {}
        lags: dict[Partition, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1)
            except Exception:
                continue
            lags[Partition(tp.topic, tp.partition)] = max(0, end - position)
        return lags
