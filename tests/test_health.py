"""What /readyz says while running (§10): broker unreachable, writes failing, no progress."""

from __future__ import annotations

from service.runtime.health import BROKER_GRACE_SECONDS, STALL_SECONDS, WRITES_GRACE_SECONDS, Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthy_by_default() -> None:
    assert Health(Clock()).problem() is None


def test_broker_unreachable_after_its_grace_and_ready_again_when_it_answers() -> None:
    clock = Clock()
    health = Health(clock)
    health.broker_answered(False)
    clock.now += BROKER_GRACE_SECONDS - 0.1
    health.broker_answered(False)  # still down: the outage started earlier
    assert health.problem() is None  # a blip is not an outage
    clock.now += 0.2
    assert health.problem() == "broker unreachable for 3s"
    health.broker_answered(True)
    assert health.problem() is None


def test_writes_failing_until_a_batch_commits() -> None:
    clock = Clock()
    health = Health(clock)
    health.write_failed()
    clock.now += 1
    health.write_failed()
    clock.now += WRITES_GRACE_SECONDS
    assert health.problem() == "writes failing for 6s"
    health.progressed()
    assert health.problem() is None


def test_no_progress_with_records_waiting() -> None:
    clock = Clock()
    health = Health(clock)
    clock.now += 3600  # idle for an hour with nothing to do is healthy
    assert health.problem() is None
    health.waiting(True)  # records arrive: the stall clock starts now, not an hour ago
    clock.now += STALL_SECONDS - 1
    assert health.problem() is None
    clock.now += 1
    assert health.problem() == "no progress for 30s with records waiting"
    health.progressed()
    assert health.problem() is None
    health.waiting(False)
    clock.now += 2 * STALL_SECONDS
    assert health.problem() is None
