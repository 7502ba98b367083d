"""Micro-benchmark of the conversion core on the benchmark's realistic mix, one core.

Reports conversions per second for `decide` on parsed events (the core) and for the whole CPU
path of one record (parse + decide + serialise both outputs, malformed records included).
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload

from service.core import COMPILED
from service.core.models import (
    ChannelSettings,
    FailureEvent,
    SenderNumberStatus,
    parse_failure_event,
    to_json,
)
from service.core.rules import Decision, Policy, decide

NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
CHANNEL = ChannelSettings(enabled=True, sendNo="0215990000", unsubscribeNo="0801234567")
REGISTRY = {"0215990000": SenderNumberStatus.ACTIVE}
POLICY = Policy(quiet_hours=None)


def _rate(fn: Callable[[Any], object], items: list[Any], repeats: int = 5) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def core(event: FailureEvent) -> Decision:
    return decide(event, CHANNEL, REGISTRY, already_requested=False, now=NOW, policy=POLICY)


def pipeline(value: bytes) -> object:
    """What the service does on the CPU for one record: parse, decide, serialise the outputs."""
    event = parse_failure_event(value)
    if not isinstance(event, FailureEvent):
        return event
    decision = core(event)
    out = to_json(decision.outcome)
    if decision.request is not None:
        out += to_json(decision.request)
    return out


def pipeline_rate(count: int = 20_000) -> float:
    """Records per second through `pipeline` on the realistic mix (median of five passes)."""
    raw = [value for _, value in workload.events(count)]
    return _rate(pipeline, raw)


def build() -> str:
    """Which build of the core runs here: the source, or the compiled extensions."""
    compiled = all(
        (getattr(importlib.import_module(f"service.core.{name}"), "__file__", "") or "").endswith(
            tuple(EXTENSION_SUFFIXES)
        )
        for name in COMPILED
    )
    return "compiled (mypyc)" if compiled else "pure Python"


def main() -> None:
    if sys.argv[1:] == ["--rate"]:
        print(f"{pipeline_rate():.0f}")  # for service_bench, from the compiled tree
        return
    print(f"core: {build()}")
    raw = [value for _, value in workload.events(20_000)]
    events = [e for e in map(parse_failure_event, raw) if isinstance(e, FailureEvent)]
    kinds: dict[str, int] = {}
    for d in map(core, events):
        key = str(d.request.type) if d.request else str(d.outcome.reason)
        kinds[key] = kinds.get(key, 0) + 1
    print(f"mix of {len(raw)} records ({len(raw) - len(events)} malformed): {kinds}")
    print(f"parse:                              {_rate(parse_failure_event, raw):10,.0f}/s")
    print(f"core (decide):                      {_rate(core, events):10,.0f} conversions/s")
    print(f"parse + decide + serialise outputs: {_rate(pipeline, raw):10,.0f} records/s")


if __name__ == "__main__":
    main()
