"""The service against the fastest loop aiokafka allows, per broker and mode, in one run (issue 13).

On each broker (Tansu; Apache Kafka when Java and Maven are here), on the same pre-loaded
realistic events (`bench/workload.py`) in a 6-partition topic:

- the ceiling: a bare aiokafka loop in its own process that reads each event and writes two
  records of the service's sizes (request and outcome), acks=all, one commit per batch;
- the service as users start it (`fallback-service run`, default settings and logging but for
  the topics, no advertising quiet hours and a 2 s group session: `harness.service_env`), at
  least once and (Apache Kafka) exactly once: events per second from its first output to its
  last, and the ratio to the ceiling measured in the same run;
- latency at a steady 2,000 events/s, failure event acknowledged → SMS request readable (read
  committed in exactly-once mode), p50 and p99, for the ceiling and the service;
- the service's peak RSS; two service processes in one group (combined rate, duplicate SMS);
- on Tansu, the time to drain a 1,000,000-event backlog;
- the pure pipeline (parse, decide, serialise) on one core, against the ceiling's rate: the
  source, and the compiled core when `make compiled-tree` has built it in `.cache/compiled`.

Each run prints one summary line per broker. With `--runs N` (default 3) it then writes the
medians, every summary line and a plot into `docs/benchmarks.md` and `docs/benchmarks.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core_bench
import workload
from harness import (
    cpu_seconds,
    peak_rss_mb,
    preload,
    service_env,
    start_service,
    stop,
    wait_ready,
)

from service.core import BUILT_FROM
from service.dev.apache_kafka import missing_tools, start_apache_kafka
from service.dev.broker import free_port, start_broker
from tests.kafka_helpers import Topics, create_topics, seed

ROOT = Path(__file__).resolve().parents[1]
COMPILED_TREE = ROOT / ".cache" / "compiled"
PARTITIONS = 6
EVENTS = 60_000
RATE = 2_000
LATENCY_SECONDS = 15
# The first seconds are left out: new topics' metadata, first connections, the first fetches.
WARM_UP_SECONDS = 3
# About the size of an outcome event: what the ceiling writes beside a copy of each input.
OUTCOME_SIZED = b"x" * 330
LOG = Path(tempfile.gettempdir()) / "service_bench.log"
# The variables that choose a mode (none for at-least-once).
ModeEnv = dict[str, str]
# The pure pipeline's rate, and the compiled core's when it is built (records per second).
Core = tuple[float, float | None]


@dataclass
class Drain:
    series: list[tuple[float, float]]  # (seconds since start, input records done per second)
    cpu_ms_per_1000: float  # CPU of the processes per 1,000 records, once they flow


@dataclass
class Rate:
    per_second: float
    series: list[tuple[float, float]]
    peak_rss_mb: float = 0.0
    duplicates: int = 0
    cpu_ms_per_1000: float = 0.0


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int
    series: list[tuple[float, float, float]]  # (seconds, p50 ms, p99 ms) per second


@dataclass
class BrokerRun:
    broker: str
    ceiling: Rate
    modes: dict[str, Rate] = field(default_factory=dict)
    ceiling_latency: Latency | None = None
    latencies: dict[str, Latency] = field(default_factory=dict)
    scale_out: Rate | None = None
    backlog_seconds: float | None = None
    backlog_events: int = 0
    core_per_second: float = 0.0
    compiled_per_second: float | None = None  # the same with the compiled core

    def summary(self) -> str:
        ceiling = self.ceiling
        parts = [
            f"{self.broker}: ceiling {ceiling.per_second:,.0f} ev/s "
            f"({ceiling.cpu_ms_per_1000:.0f} ms CPU/1k)"
        ]
        for mode, rate in self.modes.items():
            parts.append(
                f"{mode} {rate.per_second:,.0f} ev/s = {rate.per_second / ceiling.per_second:.2f}x "
                f"({rate.cpu_ms_per_1000:.0f} ms CPU/1k)"
            )
        if self.ceiling_latency is not None:
            c = self.ceiling_latency
            parts.append(f"latency p50/p99 ceiling {c.p50_ms:.0f}/{c.p99_ms:.0f} ms")
            for mode, lat in self.latencies.items():
                parts.append(
                    f"{mode} {lat.p50_ms:.0f}/{lat.p99_ms:.0f} ms "
                    f"({lat.p50_ms / c.p50_ms:.1f}x/{lat.p99_ms / c.p99_ms:.1f}x)"
                )
        rss = max(r.peak_rss_mb for r in self.modes.values())
        parts.append(f"peak RSS {rss:.0f} MB")
        if self.backlog_seconds is not None:
            parts.append(f"{self.backlog_events:,} backlog drained in {self.backlog_seconds:.0f} s")
        if self.scale_out is not None:
            parts.append(
                f"2 processes {self.scale_out.per_second:,.0f} ev/s, "
                f"{self.scale_out.duplicates} duplicate SMS"
            )
        parts.append(
            f"core pipeline {self.core_per_second:,.0f}/s = "
            f"{self.core_per_second / self.ceiling.per_second:.1f}x ceiling"
        )
        if self.compiled_per_second is not None:
            parts[-1] += (
                f" (compiled {self.compiled_per_second:,.0f}/s = "
                f"{self.compiled_per_second / self.ceiling.per_second:.1f}x)"
            )
        return " | ".join(parts)


# --- the ceiling: a bare aiokafka loop, in its own process like the service ----------------


async def bare_loop(bootstrap: str, source: str, requests: str, outcomes: str, group: str) -> None:
    """Read each event, write it and an outcome-sized record, acks=all, commit per batch."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=20, max_records=1000)
            if not batches:
                continue
            futures = []
            for records in batches.values():
                for r in records:
                    futures.append(await producer.send(requests, r.value, key=r.key))
                    futures.append(await producer.send(outcomes, OUTCOME_SIZED, key=r.key))
            await asyncio.gather(*futures)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
    finally:
        await consumer.stop()
        await producer.stop()


def launch(bootstrap: str, topics: Topics, group: str, mode: ModeEnv | None) -> tuple[Any, int]:
    """The ceiling (`mode` None) or `fallback-service run` in `mode`, and its HTTP port (the
    ceiling has none: 0)."""
    if mode is not None:
        port = free_port()
        env = service_env(topics, bootstrap, port, FALLBACK_GROUP_ID=group)
        return start_service(env | mode, LOG), port
    args = ["--bare", bootstrap, topics.input, topics.output, topics.events, group]
    bare = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=LOG.open("ab"), stderr=subprocess.STDOUT
    )
    return bare, 0


# --- measuring --------------------------------------------------------------------------


async def committed(consumer: AIOKafkaConsumer, topic: str) -> int:
    """What the consumer's group has committed of `topic`, summed over its partitions."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum([(await consumer.committed(tp)) or 0 for tp in tps])


async def edge_timestamps(bootstrap: str, topic: str, isolation: str) -> tuple[float, float]:
    """The first and last record timestamps (seconds) in `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        first, last = float("inf"), 0.0
        for tp in tps:
            if not ends[tp]:
                continue
            for start in (0, max(0, ends[tp] - 20)):
                consumer.seek(tp, start)
                got: list[Any] = []
                deadline = time.monotonic() + 10
                while not got and time.monotonic() < deadline:
                    got = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                if got:
                    first = min(first, got[0].timestamp / 1000)
                    last = max(last, max(r.timestamp for r in got) / 1000)
        return first, last
    finally:
        await consumer.stop()


async def count_keys(bootstrap: str, topic: str, isolation: str) -> tuple[int, int]:
    """(records, distinct keys) in `topic`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        keys: set[bytes | None] = set()
        records = 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for got in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                records += len(got)
                keys.update(r.key for r in got)
        return records, len(keys)
    finally:
        await consumer.stop()


async def drained(
    bootstrap: str,
    group: str,
    topic: str,
    total: int,
    processes: list[Any],
    within: float,
) -> Drain:
    """Wait until `group` committed `total` records of `topic`: the committed rate per half
    second, and the CPU the processes spent per record from the first commit to the last."""
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await watcher.start()
    series: list[tuple[float, float]] = []
    began = time.monotonic()
    before, at = 0, began
    first: tuple[int, float] | None = None
    try:
        while True:
            await asyncio.sleep(0.5)
            done = await committed(watcher, topic)
            now = time.monotonic()
            cpu = sum(cpu_seconds(p.pid) for p in processes)
            if first is None and done:
                first = (done, cpu)
            series.append((now - began, (done - before) / (now - at)))
            before, at = done, now
            if done >= total:
                assert first is not None
                flowed = done - first[0]
                per = 1000 * 1000 * (cpu - first[1]) / flowed if flowed else float("nan")
                return Drain(series, per)
            if now - began > within or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{group}: {done} of {total} committed; see {LOG}")
    finally:
        await watcher.stop()


async def throughput(
    bootstrap: str,
    source: str,
    total: int,
    *,
    mode: ModeEnv | None,
    processes: int = 1,
    within: float = 600,
) -> Rate:
    """The ceiling (`mode` None) or the service in `mode` reading `source` from the start."""
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    await seed(bootstrap, topics)
    topics.input = source
    group = f"bench-{topics.output}"
    started: list[Any] = []
    try:
        for _ in range(processes if mode is not None else 1):
            started.append(launch(bootstrap, topics, group, mode)[0])
        drain = await drained(bootstrap, group, source, total, started, within)
        isolation = (
            "read_committed"
            if mode and mode.get("FALLBACK_PROCESSING_GUARANTEE") == "exactly-once"
            else "read_uncommitted"
        )
        first, last = await edge_timestamps(bootstrap, topics.events, isolation)
        rss = max(peak_rss_mb(p.pid) for p in started)
        duplicates = 0
        if processes > 1:
            records, keys = await count_keys(bootstrap, topics.output, isolation)
            duplicates = records - keys
        return Rate(total / (last - first), drain.series, rss, duplicates, drain.cpu_ms_per_1000)
    finally:
        for p in started:
            await stop(p)


async def latency(bootstrap: str, *, mode: ModeEnv | None) -> Latency:
    """Produce at RATE events/s for LATENCY_SECONDS into an empty topic; time each event from
    its producer acknowledgement to its SMS request (or the ceiling's copy) being readable."""
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    await seed(bootstrap, topics)
    group = f"bench-{topics.output}"
    exactly_once = bool(mode and mode.get("FALLBACK_PROCESSING_GUARANTEE") == "exactly-once")
    process, port = launch(bootstrap, topics, group, mode)
    acked: dict[bytes, float] = {}
    samples: list[tuple[float, float]] = []  # (acked at, latency s)
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
        fetch_max_wait_ms=5,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await reader.start()
    await producer.start()
    stopping = asyncio.Event()

    async def read() -> None:
        tps = [TopicPartition(topics.output, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        while not stopping.is_set():
            for got in (await reader.getmany(timeout_ms=50)).values():
                now = time.time()
                for r in got:
                    at = acked.get(r.key or b"")
                    if at is not None:
                        samples.append((at, now - at))

    reading = asyncio.create_task(read())
    try:
        if mode is None:
            await asyncio.sleep(4)  # the loop joins its group
        else:
            await wait_ready(port)
        records = [(k, v) for k, v in workload.events(RATE * LATENCY_SECONDS, prefix="L")]
        began = time.monotonic()
        tick = 0.01
        per_tick = int(RATE * tick)
        for n in range(0, len(records), per_tick):
            for key, value in records[n : n + per_tick]:
                future = await producer.send(topics.input, value, key=key)
                future.add_done_callback(lambda _, k=key: acked.__setitem__(k, time.time()))
            pause = began + (n // per_tick + 1) * tick - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        await asyncio.sleep(2)  # the last ones arrive
    finally:
        stopping.set()
        await reading
        await producer.stop()
        await reader.stop()
        await stop(process)
    start = min(at for at, _ in samples)
    steady = sorted(lat for at, lat in samples if at - start >= WARM_UP_SECONDS)
    per_second: dict[int, list[float]] = {}
    for at, lat in samples:
        per_second.setdefault(int(at - start), []).append(lat)
    series = [
        (float(s), _quantile(sorted(v), 0.5) * 1000, _quantile(sorted(v), 0.99) * 1000)
        for s, v in sorted(per_second.items())
    ]
    return Latency(
        _quantile(steady, 0.5) * 1000, _quantile(steady, 0.99) * 1000, len(steady), series
    )


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


# --- one run on one broker -----------------------------------------------------------------

MODES: dict[str, dict[str, ModeEnv]] = {
    "tansu": {"at-least-once": {}},
    "apache-kafka": {
        "at-least-once": {},
        "exactly-once": {"FALLBACK_PROCESSING_GUARANTEE": "exactly-once"},
    },
}


async def run_on(broker: str, bootstrap: str, options: argparse.Namespace, core: Core) -> BrokerRun:
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    loaded = await preload(bootstrap, topics.input, workload.events(options.events))
    ceiling = await throughput(bootstrap, topics.input, loaded, mode=None)
    result = BrokerRun(broker, ceiling, core_per_second=core[0], compiled_per_second=core[1])
    for mode, env in MODES[broker].items():
        result.modes[mode] = await throughput(bootstrap, topics.input, loaded, mode=env)
    if not options.quick:
        result.ceiling_latency = await latency(bootstrap, mode=None)
        for mode, env in MODES[broker].items():
            result.latencies[mode] = await latency(bootstrap, mode=env)
        result.scale_out = await throughput(bootstrap, topics.input, loaded, mode={}, processes=2)
    if broker == "tansu" and options.backlog:
        backlog = Topics.fresh()
        await create_topics(bootstrap, backlog, partitions=PARTITIONS)
        count = await preload(
            bootstrap, backlog.input, workload.events(options.backlog, prefix="M")
        )
        drain = await throughput(bootstrap, backlog.input, count, mode={}, within=1200)
        result.backlog_seconds, result.backlog_events = count / drain.per_second, count
        result.modes["at-least-once"].peak_rss_mb = max(
            result.modes["at-least-once"].peak_rss_mb, drain.peak_rss_mb
        )
    return result


async def one_run(options: argparse.Namespace, core: Core) -> list[BrokerRun]:
    results = []
    if options.broker in ("tansu", "both"):
        tansu = start_broker()
        try:
            results.append(await run_on("tansu", tansu.bootstrap, options, core))
        finally:
            tansu.stop()
        print(results[-1].summary(), flush=True)
    if options.broker == "tansu":
        return results
    why = missing_tools()
    if why is not None:
        print(f"apache-kafka: skipped ({why})")
        return results
    with tempfile.TemporaryDirectory() as directory:
        kafka = await asyncio.to_thread(start_apache_kafka, Path(directory))
        try:
            results.append(await run_on("apache-kafka", kafka.bootstrap, options, core))
        finally:
            kafka.stop()
    print(results[-1].summary(), flush=True)
    return results


# --- the report ----------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else model
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GB, Python {platform.python_version()}, "
        "the broker on the same machine"
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: list[list[BrokerRun]], options: argparse.Namespace) -> str:
    """The Markdown section `make bench` keeps in docs/benchmarks.md: medians of the runs."""
    lines = [
        f"Date: {dt.date.today().isoformat()}. Machine: {machine()}.",
        f"Command: `make bench` (`python bench/service_bench.py --runs {len(runs)}`): "
        f"{options.events:,} events on {PARTITIONS} partitions, latency at {RATE:,} events/s "
        f"for {LATENCY_SECONDS} s (the first {WARM_UP_SECONDS} s left out), a "
        f"{options.backlog:,}-event backlog on Tansu.",
        f"Medians of {len(runs)} runs; each ratio is taken within its run, then the median.",
        "",
        "| broker | mode | events/s | × ceiling | CPU ms / 1,000 events | p50 ms (× ceiling) "
        "| p99 ms (× ceiling) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, broker in enumerate(r.broker for r in runs[0]):
        mine = [run[i] for run in runs if len(run) > i]
        for mode in ["ceiling", *mine[0].modes]:
            rates = [m.ceiling if mode == "ceiling" else m.modes[mode] for m in mine]
            lats = [
                (lat, m.ceiling_latency)
                for m in mine
                if m.ceiling_latency
                and (lat := m.ceiling_latency if mode == "ceiling" else m.latencies.get(mode))
            ]
            ratio = median(
                [r.per_second / m.ceiling.per_second for r, m in zip(rates, mine, strict=True)]
            )
            p50 = median([a.p50_ms for a, _ in lats])
            p99 = median([a.p99_ms for a, _ in lats])
            p50x = median([a.p50_ms / c.p50_ms for a, c in lats])
            p99x = median([a.p99_ms / c.p99_ms for a, c in lats])
            lines.append(
                f"| {broker} | {'ceiling (bare loop)' if mode == 'ceiling' else mode} "
                f"| {median([r.per_second for r in rates]):,.0f} | **{ratio:.2f}** "
                f"| {median([r.cpu_ms_per_1000 for r in rates]):.0f} "
                f"| {p50:.0f} ({p50x:.1f}×) | {p99:.0f} ({p99x:.1f}×) |"
            )
    lines += [
        "",
        "| broker | peak RSS | 2 processes, one group | backlog drained | core pipeline |",
        "|---|---|---|---|---|",
    ]
    for i, broker in enumerate(r.broker for r in runs[0]):
        mine = [run[i] for run in runs if len(run) > i]
        rss = median([max(r.peak_rss_mb for r in m.modes.values()) for m in mine])
        scale = [m.scale_out for m in mine if m.scale_out]
        backlog = [m.backlog_seconds for m in mine if m.backlog_seconds]
        core = median([m.core_per_second for m in mine])
        core_x = median([m.core_per_second / m.ceiling.per_second for m in mine])
        built = [(m.compiled_per_second, m.ceiling.per_second) for m in mine]
        compiled = [(rate, ceiling) for rate, ceiling in built if rate is not None]
        compiled_x = (
            f"; compiled {median([rate for rate, _ in compiled]):,.0f}/s = "
            f"{median([rate / ceiling for rate, ceiling in compiled]):.1f}×"
            if compiled
            else ""
        )
        scaled = (
            f"{median([s.per_second for s in scale]):,.0f} ev/s, "
            f"{sum(s.duplicates for s in scale)} duplicate SMS"
            if scale
            else "—"
        )
        drained = f"{median(backlog):.0f} s" if backlog else "—"
        lines.append(
            f"| {broker} | {rss:.0f} MB | {scaled} | {drained} | {core:,.0f}/s = {core_x:.1f}× "
            f"ceiling{compiled_x} |"
        )
    lines += ["", "Summary lines, run by run:", "", "```"]
    lines += [r.summary() for run in runs for r in run]
    lines += ["```", "", "![throughput and latency over time](benchmarks.png)"]
    return "\n".join(lines)


BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def write_doc(text: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    current = doc.read_text()
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    else:
        doc.write_text(f"{current.rstrip()}\n\n{BEGIN}\n{text}\n{END}\n")


def plot(runs: list[list[BrokerRun]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = runs[-1]
    fig, axes = plt.subplots(2, len(last), figsize=(6 * len(last), 7), squeeze=False)
    for column, result in enumerate(last):
        top, bottom = axes[0][column], axes[1][column]
        rates = {"ceiling": result.ceiling, **result.modes}
        if result.scale_out:
            rates["2 processes"] = result.scale_out
        for name, rate in rates.items():
            top.plot([t for t, _ in rate.series], [r for _, r in rate.series], label=name)
        top.set_title(f"{result.broker}: pre-loaded events, events/s committed")
        top.set_xlabel("seconds")
        top.legend()
        lats = {"ceiling": result.ceiling_latency, **result.latencies}
        for name, lat in lats.items():
            if lat is None:
                continue
            line = bottom.plot([s for s, _, _ in lat.series], [p for _, p, _ in lat.series])[0]
            bottom.plot(
                [s for s, _, _ in lat.series],
                [p for _, _, p in lat.series],
                linestyle="--",
                color=line.get_color(),
            )
            line.set_label(f"{name} p50 (p99 dashed)")
        bottom.set_title(f"{result.broker}: latency at {RATE:,} events/s, ms")
        bottom.set_xlabel("seconds")
        bottom.set_yscale("log")
        bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def compiled_pipeline_rate() -> float | None:
    """`core_bench.pipeline_rate` with the compiled core, in the tree `make compiled-tree`
    builds (None when it is not there)."""
    if not (COMPILED_TREE / "service" / "core" / BUILT_FROM).exists():
        return None
    said = subprocess.run(
        [sys.executable, "bench/core_bench.py", "--rate"],
        cwd=COMPILED_TREE,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(said.stdout.split()[-1])


async def main(options: argparse.Namespace) -> None:
    # Topics created a moment ago answer "not leader" for a while; aiokafka retries and says so.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    runs = []
    for n in range(options.runs):
        # The pure pipeline, in the same run as the brokers' figures it is compared with.
        core = (core_bench.pipeline_rate(), compiled_pipeline_rate())
        said = "" if core[1] is None else f", compiled {core[1]:,.0f}"
        print(f"run {n + 1} of {options.runs}: core pipeline {core[0]:,.0f}{said} records/s")
        runs.append(await one_run(options, core))
    if options.write:
        write_doc(report(runs, options))
        plot(runs, ROOT / "docs" / "benchmarks.png")
        print("wrote docs/benchmarks.md and docs/benchmarks.png")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="throughput only")
    parser.add_argument("--broker", choices=("both", "tansu", "apache-kafka"), default="both")
    parser.add_argument("--no-write", dest="write", action="store_false")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        asyncio.run(bare_loop(*sys.argv[2:7]))
    else:
        asyncio.run(main(parse(sys.argv[1:])))
