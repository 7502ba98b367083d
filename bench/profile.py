"""Where the running service spends its CPU: py-spy samples `fallback-service run` on Tansu.

Pre-loads the benchmark's events, starts the service as users start it, samples it with py-spy
while it drains them, and prints the share of samples under each function (inclusive) and at
the top of the stack (self). The flame graph itself (`--svg PATH`) is for reading, not for the
repository; its findings go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload
from harness import BIN, preload, service_env, start_service, stop, wait_ready

from service.dev.broker import free_port, start_broker
from tests.kafka_helpers import Topics, create_topics, seed


def summarise(collapsed: Path, top: int) -> str:
    """Inclusive and self shares of each function in py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        # "function (path/file.py:line)" → "function file.py"
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0] for f in stack.split(";")
        ]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


async def main(options: argparse.Namespace) -> None:
    broker = start_broker()
    try:
        topics = Topics.fresh()
        await create_topics(broker.bootstrap, topics, partitions=6)
        await seed(broker.bootstrap, topics)
        count = await preload(broker.bootstrap, topics.input, workload.events(options.events))
        port = free_port()
        env = service_env(topics, broker.bootstrap, port, **options.env)
        log = Path(tempfile.gettempdir()) / "profile_service.log"
        # It drains for about ten seconds; py-spy attaches once it is ready and samples less.
        process = start_service(env, log)
        await wait_ready(port)
        out = Path(tempfile.gettempdir()) / "service.collapsed"
        formats = [("raw", str(out))] + ([("flamegraph", options.svg)] if options.svg else [])
        for kind, path in formats:
            spy = await asyncio.create_subprocess_exec(
                *(str(BIN / "py-spy"), "record", "--pid", str(process.pid), "--rate", "200"),
                *("--duration", str(options.seconds), "--nonblocking"),
                *("--format", kind, "--output", path),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await spy.wait()
        await stop(process)
        print(f"{count:,} events; sampled {options.seconds} s")
        print(summarise(out, options.top))
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--svg", default="")
    parser.add_argument(
        "--env", type=lambda s: dict([s.split("=", 1)]), action="append", default=[]
    )
    ns = parser.parse_args()
    ns.env = {k: v for d in ns.env for k, v in d.items()}
    asyncio.run(main(ns))
