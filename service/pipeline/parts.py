"""A large batch converted and written a part at a time, each part's writes overlapping the
next part's conversion, every output topic still receiving the parts in input order.

The conversion is most of the CPU, and each write step waits for a round trip to the broker:
overlapped, a batch costs about its conversion instead of both. A part's step starts once the
part before has finished the same step, so retries keep order too; a failure stops the parts
after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from service.pipeline.batch import Batch
from service.pipeline.seams import InputRecord

# Records per part: small enough that the first part's writes start soon, large enough that
# each write still fills record batches.
PART_RECORDS = 250

Step = Callable[[Batch], Awaitable[None]]


async def in_parts(
    records: Sequence[InputRecord],
    convert: Callable[[Sequence[InputRecord], set[str]], Batch],
    steps: Sequence[Step],
    size: int = PART_RECORDS,
) -> Batch:
    """Convert `records` `size` at a time (the parts share the set of fallbacks requested so
    far) and run `steps` on each part, step k of a part after step k of the part before;
    returns the whole batch once every part is written."""
    pending: set[str] = set()
    whole = Batch()
    parts: list[Batch] = []
    chained: list[asyncio.Task[None]] = []
    before: list[asyncio.Future[None]] | None = None
    gates: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()
    try:
        for first in range(0, len(records), size):
            part = convert(records[first : first + size], pending)
            whole.absorb(part)
            parts.append(part)
            mine = [loop.create_future() for _ in steps]
            gates += mine
            chained.append(asyncio.create_task(_steps(part, steps, before, mine)))
            before = mine
            await asyncio.sleep(0)  # let it send before the next part converts
        results = await asyncio.gather(*chained, return_exceptions=True)
    except BaseException:
        # Cancelled (or failed) while converting: no part goes on writing on its own.
        for task in chained:
            task.cancel()
        await asyncio.gather(*chained, return_exceptions=True)
        raise
    finally:
        for gate in gates:  # a failure reaches every later gate: all of them are seen here
            if gate.done() and not gate.cancelled():
                gate.exception()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    for part in parts:  # a part knows its markers (and what they change) once written
        whole.marked += part.marked
        whole.results.merge(part.results)
    return whole


async def _steps(
    part: Batch,
    steps: Sequence[Step],
    before: list[asyncio.Future[None]] | None,
    mine: list[asyncio.Future[None]],
) -> None:
    try:
        for index, step in enumerate(steps):
            if before is not None:
                await before[index]
            await step(part)
            mine[index].set_result(None)
    except asyncio.CancelledError:
        for gate in mine:
            gate.cancel()
        raise
    except BaseException as exc:
        for gate in mine:
            if not gate.done():
                gate.set_exception(exc)
        raise
