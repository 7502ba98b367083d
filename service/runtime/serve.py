"""The process around a service: its HTTP server, SIGTERM/SIGINT, and the exit status."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from service.config import ConfigError
from service.runtime.service import FallbackService

log = logging.getLogger("fallback.service")


# Python's cycle collector runs after every 700 container allocations by default: over a
# thousand times per 60,000 events, about a tenth of the service's CPU (docs/decisions.md).
# Its garbage is almost all freed by reference counting; the few cycles (asyncio's exceptions
# and tasks) wait a little longer.
COLLECT_AFTER_ALLOCATIONS = 50_000
COLLECT_OLDER_EVERY = (20, 10)


def collect_less() -> None:
    """Tune the cycle collector for the hot path: what exists at start-up (modules, settings,
    tables) is never scanned again, and the youngest generation is collected after
    `COLLECT_AFTER_ALLOCATIONS` allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(COLLECT_AFTER_ALLOCATIONS, *COLLECT_OLDER_EVERY)


class _HttpServer(uvicorn.Server):
    # The service owns SIGTERM/SIGINT; uvicorn would re-raise them after serving.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(service: FallbackService) -> int:
    """Run `service` with its HTTP server until SIGTERM or SIGINT; 0 after a clean stop, 1 when
    it could not go on (an unwritable batch, the HTTP server gone, a failed start), 2 when its
    configuration was refused."""
    settings = service.settings
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = _HttpServer(
        uvicorn.Config(
            service.http_app,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    )
    http_task = asyncio.create_task(http.serve(), name="http")
    start_task = asyncio.create_task(service.start(), name="start")
    stop_task = asyncio.create_task(stop.wait(), name="signal")
    failed_task = asyncio.create_task(service.failed.wait(), name="failed")
    await asyncio.wait({start_task, stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if http_task.done():
        log.error("HTTP server on port %d stopped", settings.http_port)
        code = 1
    elif start_task.done() and isinstance(start_task.exception(), ConfigError):
        log.error("start-up refused: %s", start_task.exception())
        code = 2
    elif start_task.done() and start_task.exception() is not None:
        log.error("start-up failed", exc_info=start_task.exception())
        code = 1
    else:
        await asyncio.wait({stop_task, http_task, failed_task}, return_when=asyncio.FIRST_COMPLETED)
        if failed_task.done():
            code = 1
    log.info("stopping")
    if not start_task.done():
        start_task.cancel()
        with contextlib.suppress(BaseException):
            await start_task
    await service.stop()
    http.should_exit = True
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(http_task, 2)
    stop_task.cancel()
    failed_task.cancel()
    log.info("stopped")
    return code
