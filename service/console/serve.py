"""The console's process: its parts wired in one place, served until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from service.config import Settings
from service.console.app import Console, console_app
from service.console.follow import Budget, Follower
from service.console.index import Index
from service.console.operations import KafkaOperations
from service.console.sessions import Sessions
from service.console.users import load_users

log = logging.getLogger("service.console")


class _Server(uvicorn.Server):
    # The console owns SIGTERM/SIGINT, as the service does.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def index_identity(settings: Settings) -> str:
    """What an index file was built from: another set of topics means another index."""
    return "|".join((settings.events_topic, settings.dlq_topic, settings.audit_topic))


async def serve_console(settings: Settings) -> int:
    """Run the console; 0 after a clean stop, 1 when its HTTP server could not serve. Raises
    ConfigError (no users file) and UsersFileError (no usable account) before anything starts."""
    options = settings.console()
    users = load_users(options.users_file)
    index = Index(options.index_path, index_identity(settings))
    if index.rebuilt:
        log.info("console index %s is new or was stale: building it from the topics", index.path)
    budget = Budget(options.read_budget)
    follower = Follower(settings, index, budget)
    operations = KafkaOperations(settings, budget)
    await operations.start()
    follower.start()
    console = Console(
        settings=settings,
        users=users,
        users_file=options.users_file,
        sessions=Sessions(options.session_idle_seconds),
        index=index,
        operations=operations,
        progress=follower.progress,
        secure_cookies=options.secure_cookies,
    )
    server = _Server(
        uvicorn.Config(
            console_app(console),
            host=options.host,
            port=options.port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            # Behind a TLS proxy the client address is the proxy's; the brake keys on it.
            proxy_headers=False,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    served = asyncio.create_task(server.serve(), name="console-http")
    stopped = asyncio.create_task(stop.wait(), name="signal")
    log.info(
        "console on http://%s:%d (%d users, index %s)",
        options.host,
        options.port,
        len(users),
        options.index_path,
    )
    await asyncio.wait({served, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 1 if served.done() else 0
    server.should_exit = True
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(served, 3)
    stopped.cancel()
    await follower.stop()
    await operations.stop()
    index.close()
    return code
