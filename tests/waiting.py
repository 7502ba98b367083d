"""Waiting for something to become true, the one way the tests do it: poll with a deadline,
fail saying what was awaited (no fixed sleeps, no hand-written loops)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Said = str | Callable[[], str]


def _said(what: Said) -> str:
    return what() if callable(what) else what


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    within: float = 20.0,
    what: Said = "the condition",
    every: float = 0.05,
) -> None:
    """Return once `condition()` (sync or async) is true; fail after `within` seconds."""

    async def check() -> bool:
        found = condition()
        return found if isinstance(found, bool) else await found

    await eventually_value(check, bool, within, what, every)


async def eventually_value(
    produce: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float = 20.0,
    what: Said = "the value",
    every: float = 0.1,
) -> T:
    """The first value of `produce()` that `accept` takes; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await produce()
        if accept(value):
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {within}s: {_said(what)} (last: {value!r})")
        await asyncio.sleep(every)


def eventually_sync(
    condition: Callable[[], bool],
    within: float = 20.0,
    what: Said = "the condition",
    every: float = 0.05,
) -> None:
    """`eventually` for code outside an event loop (a thread polling a process)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within}s: {_said(what)}")
        time.sleep(every)
