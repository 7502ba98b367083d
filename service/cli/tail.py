"""`fallback-service tail`: outcome events as a readable table, live with --follow (§7)."""

import asyncio
import signal
from typing import Annotated, Any

import typer

from service.cli._common import Json, emit_json, parse_time, run, settings, shown_time
from service.core.models import Reason, Status
from service.ops.find import outcome_filter, outcomes


def line(moment: Any, outcome: dict[str, Any]) -> str:
    """One outcome as a line: time, fallbackId, status, reason, type, bytes, and the provider
    that took it or reported its result (with failover, not always the first one, §10)."""
    provider = (outcome.get("provider") or {}).get("name") or (outcome.get("delivery") or {}).get(
        "provider"
    )
    return (
        f"{shown_time(moment)} {outcome.get('fallbackId', '?'):<28} "
        f"{outcome.get('status', '?'):<11} {outcome.get('reason') or '-':<28} "
        f"{outcome.get('type') or '-':<3} {outcome.get('bodyBytes') or '-':>5} "
        f"{provider or '-'}"
    ).rstrip()


def tail(
    status: Annotated[
        Status | None, typer.Option(case_sensitive=False, help="Only this status.")
    ] = None,
    reason: Annotated[
        Reason | None, typer.Option(case_sensitive=False, help="Only this reason.")
    ] = None,
    sender_key: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time on (ISO time, a date, or 15m/2h ago).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new outcomes until Ctrl-C.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Outcome events: time, fallbackId, status, reason, type, bytes, provider (one JSON line
    each with --json)."""
    keep = outcome_filter(
        status.value if status else None, reason.value if reason else None, sender_key
    )
    since_at = parse_time(since, "--since")

    async def show() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        shown = 0
        async for moment, outcome in outcomes(
            settings(), keep, since=since_at, follow=follow, stop=stop
        ):
            if as_json:
                emit_json({"time": moment.isoformat(), **outcome})
            else:
                typer.echo(line(moment, outcome))
            shown += 1
        return shown

    shown = run(show())
    if not as_json and not follow:
        typer.echo(f"{shown} outcomes")
