"""What the verbs share: settings, text or JSON output, time filters, refusals."""

import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer

from service.config import Settings, load_settings
from service.core.rules import KST, parse_duration
from service.ops import Refused
from service.ops.audit import Actor, default_actor

T = TypeVar("T")

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]
ActorName = Annotated[
    str | None,
    typer.Option(
        "--actor",
        help="Who makes the change, for the audit record (default: the operating-system user).",
    ),
]


def actor(name: str | None) -> Actor:
    """The audit actor of a CLI change (§10)."""
    chosen = (name or "").strip() or default_actor()
    return Actor(chosen, via="cli")


def settings() -> Settings:
    """The FALLBACK_* settings, as the service reads them (TLS/SASL included)."""
    return load_settings()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one operation; a refusal becomes exit status 1 with one line on standard error."""
    try:
        return asyncio.run(coroutine)
    except Refused as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    """One line on standard error that says what to do, and exit status 1."""
    print(f"fallback-service: {message}", file=sys.stderr)
    raise typer.Exit(1)


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")


def parse_time(value: str | None, option: str) -> datetime | None:
    """`2026-11-25T10:00:00+09:00`, `2026-11-25` (midnight in Korea), or `15m` / `2h` ago."""
    if value is None:
        return None
    text = value.strip()
    try:
        ago = parse_duration(text)
    except ValueError:
        ago = None
    if ago is not None:
        return datetime.now(UTC) - ago
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a time: use 2026-11-25T10:00:00+09:00, 2026-11-25 or 15m, 2h",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=KST)


def shown_time(moment: datetime) -> str:
    """A record time in Korean time, to the second."""
    return moment.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")
