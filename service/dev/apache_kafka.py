"""Apache Kafka for tests and benchmarks: a pinned 4.x broker from Maven Central, KRaft, loopback.

`ensure_jars()` has Maven copy the broker and its runtime jars into `.cache/kafka/<version>/lib`
(ignored by git; Maven's own cache makes later copies quick). `ApacheKafka.start()` formats a
single-node KRaft log directory and runs `kafka.Kafka` on free loopback ports with a small heap
and quiet logging. The log directory stays on disk, so the tests can kill the broker and start it
again on the same data, or freeze it with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.dev.broker import free_port

KAFKA_VERSION = "4.1.1"  # the same as service/dev/kafka/pom.xml and docker-compose.yml
HERE = Path(__file__).resolve().parent / "kafka"
ROOT = Path(__file__).resolve().parents[2]


def missing_tools() -> str | None:
    """Why Apache Kafka cannot run here (no Java or Maven), or None when it can."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found on PATH"
    return None


def ensure_jars(cache: Path | None = None) -> Path:
    """The folder holding the broker's jars, fetched with Maven when not there yet."""
    lib = (cache or ROOT / ".cache" / "kafka") / KAFKA_VERSION / "lib"
    done = lib / ".complete"
    if done.exists():
        return lib
    lib.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(HERE / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={lib}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mvn could not fetch Apache Kafka {KAFKA_VERSION}:\n{result.stdout}")
    done.touch()
    return lib


_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=false
group.min.session.timeout.ms=1000
"""


@dataclass
class ApacheKafka:
    """One KRaft broker+controller on loopback, its data in `directory`."""

    directory: Path
    lib: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "server.properties"

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile=file:{HERE / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.directory}",
            "-cp",
            f"{self.lib}/*",
            *args,
        ]

    def format(self) -> None:
        """Write the configuration and format an empty KRaft log directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            _PROPERTIES.format(
                port=self.port, controller=self.controller_port, data=self.directory / "data"
            )
        )
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(self.config)
            ),
            capture_output=True,
            check=True,
            timeout=120,
        )

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker on its data directory (formatting it the first time); wait for it."""
        if not self.config.exists():
            self.format()
        began = time.monotonic()
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.config)),
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "stderr.log", "ab"),  # noqa: SIM115 - the child owns it
            start_new_session=True,
        )
        asyncio.run(self._wait_ready(time.monotonic() + timeout))
        self.started_in = time.monotonic() - began

    async def _wait_ready(self, deadline: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "server.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"Apache Kafka exited with {self.process.returncode}:\n{log}")
            try:  # listening yet? (saves aiokafka from logging every refused connection)
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError as exc:
                last = exc
                await asyncio.sleep(0.2)
                continue
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                if (await admin.describe_cluster()).get("brokers"):
                    return
            except Exception as exc:  # not listening, or not a broker yet
                last = exc
            finally:
                await admin.close()
            await asyncio.sleep(0.3)
        raise RuntimeError(f"Apache Kafka not ready in time: {last}")

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the broker dies at once; its log directory stays for a restart."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), killed if it takes more than 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def _cluster_id() -> str:
    """A base64url UUID of 22 characters, as Kafka wants, that does not start with `-`
    (StorageTool would read it as an option)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if candidate[0].isalnum():
            return candidate


def start_apache_kafka(directory: Path) -> ApacheKafka:
    """Fetch the jars if needed, then start a fresh broker with its data in `directory`."""
    broker = ApacheKafka(directory=directory, lib=ensure_jars())
    broker.start()
    return broker


async def on_each_broker(measure: Callable[[str, str], Awaitable[None]]) -> None:
    """Run `measure(name, bootstrap)` on Tansu, then on Apache Kafka when it can run here
    (benchmarks compare the two in one run)."""
    from service.dev.broker import start_broker

    tansu = start_broker()
    try:
        await measure("tansu", tansu.bootstrap)
    finally:
        tansu.stop()
    await on_apache_kafka(measure)


async def on_apache_kafka(measure: Callable[[str, str], Awaitable[None]]) -> None:
    """Run `measure("apache-kafka", bootstrap)` on a broker started for it, or say why it
    cannot run here."""
    why = missing_tools()
    if why is not None:
        print(f"apache-kafka: skipped ({why})")
        return
    with tempfile.TemporaryDirectory() as directory:
        kafka = await asyncio.to_thread(start_apache_kafka, Path(directory))
        try:
            await measure("apache-kafka", kafka.bootstrap)
        finally:
            kafka.stop()
