"""The batch handler's error ladder on doubles: what each way a batch can end does to the
input (commit, hold and pause, rewind, stop), and the exit status an unwritable batch gives."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.config import load_settings
from service.pipeline.batch import Held
from service.pipeline.seams import (
    InputRecord,
    Partition,
    PartitionsNotCommitted,
    Stopping,
    Unwritable,
)
from service.runtime.handler import BatchHandler
from service.runtime.positions import Positions
from tests.test_positions import recs

A0, A1 = Partition("in", 0), Partition("in", 1)


@dataclass
class Consumer:
    assigned: set[Partition] = field(default_factory=lambda: {A0, A1})
    seeks: list[dict[Partition, int]] = field(default_factory=list)

    def assignment(self) -> Collection[Partition]:
        return self.assigned

    def seek(self, targets: Mapping[Partition, int]) -> None:
        self.seeks.append(dict(targets))


@dataclass
class Processor:
    raises: BaseException | None = None
    seen: list[list[InputRecord]] = field(default_factory=list)

    async def process(self, records: Sequence[InputRecord]) -> None:
        self.seen.append(list(records))
        if self.raises is not None:
            raise self.raises


@dataclass
class Writer:
    abandoned: int = 0

    async def abandon(self) -> None:
        self.abandoned += 1


@dataclass
class Calls:
    pauses: list[float] = field(default_factory=list)
    progress: int = 0
    held: list[int] = field(default_factory=list)
    unwritable: int = 0


def handler(raises: BaseException | None = None) -> tuple[BatchHandler, Any]:
    consumer, processor, writer, calls = Consumer(), Processor(raises), Writer(), Calls()
    restored = asyncio.Event()
    restored.set()

    def progressed() -> None:
        calls.progress += 1

    def unwritable() -> None:
        calls.unwritable += 1

    h = BatchHandler(
        processor=processor,
        writer=writer,
        consumer=consumer,
        positions=Positions(),
        stopping=asyncio.Event(),
        restored=restored,
        pause=calls.pauses.append,
        on_progress=progressed,
        on_held=calls.held.append,
        on_unwritable=unwritable,
        backoff=0.01,
    )
    return h, (consumer, processor, writer, calls)


BATCH = recs(0, 10, 11, 12) + recs(1, 5)


async def test_a_handled_batch_advances_and_counts_as_progress() -> None:
    h, (consumer, processor, writer, calls) = handler()
    await h(tuple(BATCH))
    assert processor.seen == [BATCH]
    assert h.positions.floors == {A0: 13, A1: 6}
    assert consumer.seeks == [] and writer.abandoned == 0 and calls.progress == 1


async def test_a_held_batch_rewinds_to_the_first_held_record_and_pauses() -> None:
    held = Held("SMS API unavailable", 2.5, {Partition("in", 0): 11}, {(A0, 12)}, 1)
    h, (consumer, _, writer, calls) = handler(held)
    await h(tuple(BATCH))
    assert consumer.seeks == [{A0: 11}]
    assert calls.pauses == [2.5] and calls.held == [1] and calls.progress == 1
    assert h.positions.floors == {A0: 11, A1: 6}  # what settled is committed
    assert writer.abandoned == 0 and not h.failed.is_set()
    h.processor.raises = None  # type: ignore[attr-defined]
    await h(tuple(recs(0, 11, 12, 13)))  # 12 was done past the held one: not again
    assert h.processor.seen[-1] == recs(0, 11, 13)  # type: ignore[attr-defined]


async def test_stopping_abandons_the_batch_uncommitted() -> None:
    h, (consumer, _, writer, calls) = handler(Stopping("stopping"))
    await h(tuple(BATCH))
    assert writer.abandoned == 1 and consumer.seeks == [] and h.positions.floors == {}
    assert calls.progress == 0 and not h.failed.is_set()


async def test_an_unwritable_batch_stops_the_service_uncommitted() -> None:
    h, (consumer, _, writer, calls) = handler(Unwritable("too large"))
    await h(tuple(BATCH))
    assert h.failed.is_set() and calls.unwritable == 1 and writer.abandoned == 1
    assert consumer.seeks == [] and h.positions.floors == {}


async def test_partitions_not_committed_are_read_again_the_committed_advance() -> None:
    exc = PartitionsNotCommitted({A1: RuntimeError("fenced")}, {A0})
    h, (consumer, _, writer, _) = handler(exc)
    await h(tuple(BATCH))
    assert writer.abandoned == 1
    assert consumer.seeks == [{A1: 5}]
    assert h.positions.floors == {A0: 13}


async def test_an_unexpected_failure_rewinds_the_whole_batch_and_backs_off() -> None:
    h, (consumer, _, writer, calls) = handler(RuntimeError("boom"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await h(tuple(BATCH))
    assert loop.time() - began >= 0.01  # the backoff, outside the lock
    assert not h.lock.locked()
    assert consumer.seeks == [{A0: 10, A1: 5}]
    assert writer.abandoned == 1 and calls.progress == 0 and h.positions.floors == {}


async def test_records_of_partitions_owned_elsewhere_are_not_handled() -> None:
    h, (consumer, processor, _, _) = handler()
    consumer.assigned = {A1}
    await h(tuple(BATCH))
    assert processor.seen == [recs(1, 5)]


async def test_nothing_is_handled_once_stopping() -> None:
    h, (_, processor, _, _) = handler()
    h.stopping.set()
    await h(tuple(BATCH))
    assert processor.seen == []


async def test_a_batch_waits_for_the_restore() -> None:
    h, (_, processor, _, _) = handler()
    h.restored.clear()
    task = asyncio.create_task(h(tuple(BATCH)))
    await asyncio.sleep(0.02)
    assert processor.seen == []
    h.restored.set()
    await task
    assert processor.seen == [BATCH]


@dataclass
class StubService:
    """What `serve` runs: a service whose batch turned out unwritable once started."""

    settings: Any
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    async def http_app(self, scope: Any, receive: Any, send: Any) -> None:
        return None

    async def start(self) -> None:
        self.failed.set()

    async def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("fails", [True, False])
async def test_serve_exits_1_when_the_service_cannot_go_on(fails: bool) -> None:
    from service.runtime.serve import serve

    service = StubService(load_settings(http_port=0, http_host="127.0.0.1"))
    if not fails:

        async def start() -> None:
            asyncio.get_running_loop().call_later(0.05, _sigterm)

        service.start = start  # type: ignore[method-assign]
    code = await serve(service)  # type: ignore[arg-type]
    assert code == (1 if fails else 0) and service.stopped


def test_the_cycle_collector_is_tuned_for_the_hot_path() -> None:
    """`fallback-service run` freezes what start-up made and collects the youngest generation
    after 50,000 allocations rather than 700 (docs/decisions.md, the hot path)."""
    import gc

    from service.runtime.serve import COLLECT_AFTER_ALLOCATIONS, COLLECT_OLDER_EVERY, collect_less

    before = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_threshold() == (COLLECT_AFTER_ALLOCATIONS, *COLLECT_OLDER_EVERY)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_run_tunes_the_collector_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.runtime.compose as compose
    import service.runtime.serve as serving
    from service.cli.run import run

    calls: list[str] = []
    monkeypatch.setattr(compose, "build_service", lambda settings: calls.append("build"))
    monkeypatch.setattr(serving, "collect_less", lambda: calls.append("collect_less"))

    async def served(service: object) -> int:
        calls.append("serve")
        return 0

    monkeypatch.setattr(serving, "serve", served)
    run()
    assert calls == ["build", "collect_less", "serve"]


def _sigterm() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Pausable:
    calls: list[str] = field(default_factory=list)

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def probe(self) -> None:
        self.calls.append("probe")


async def test_flow_pauses_then_probes_and_resumes_after_the_wait() -> None:
    from service.runtime.flow import Flow

    both = Pausable()
    flow = Flow(both, both, asyncio.Event())
    flow.pause(0.02)
    flow.pause(0.02)  # held again while paused: one resume
    assert both.calls == ["pause", "pause"]
    await asyncio.sleep(0.06)
    assert both.calls == ["pause", "pause", "probe", "resume"]


async def test_flow_does_not_resume_once_stopping() -> None:
    from service.runtime.flow import Flow

    both, stopping = Pausable(), asyncio.Event()
    flow = Flow(both, both, stopping)
    flow.pause(5)
    stopping.set()
    await asyncio.sleep(0.01)
    assert both.calls == ["pause"]
