"""`fallback-service dlq`: list dead letters, and replay them to the input once fixed (§8)."""

from typing import Annotated

import typer

from service.cli._common import (
    ActorName,
    Json,
    actor,
    emit_json,
    parse_time,
    run,
    settings,
    shown_time,
)
from service.core.models import DeadLetterError
from service.logs import mask_numbers_in
from service.ops.dlq import DeadLetter, dead_letters, replay, replay_headers

app = typer.Typer(help="The dead-letter topic: records that were not failure events.")

ErrorFilter = Annotated[
    DeadLetterError | None,
    typer.Option("--error", case_sensitive=False, help="Only dead letters of this error."),
]
Since = Annotated[
    str | None, typer.Option(help="Only from this time on (ISO time, a date, or 15m/2h ago).")
]
Until = Annotated[str | None, typer.Option(help="Only up to this time.")]


def _short(raw: bytes | None, limit: int = 80) -> str:
    if raw is None:
        return "(none)"
    text = mask_numbers_in(raw.decode("utf-8", "replace")).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_dict(d: DeadLetter) -> dict[str, object]:
    return {
        "partition": d.partition,
        "offset": d.offset,
        "time": d.timestamp.isoformat(),
        "error": d.error,
        "detail": mask_numbers_in(d.detail),
        "key": _short(d.key, 200),
        "value": _short(d.value, 200),
    }


def _select(
    error: DeadLetterError | None, since: str | None, until: str | None
) -> list[DeadLetter]:
    return run(
        dead_letters(
            settings(),
            error=error.value if error else None,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
        )
    )


@app.command("list")
def list_(
    error: ErrorFilter = None, since: Since = None, until: Until = None, as_json: Json = False
) -> None:
    """Dead letters: where, when, why; key and value cut short, phone numbers masked."""
    found = _select(error, since, until)
    if as_json:
        emit_json([_as_dict(d) for d in found])
        return
    for d in found:
        typer.echo(
            f"{d.partition}@{d.offset:<8} {shown_time(d.timestamp)} {d.error:<14} "
            f"key={_short(d.key, 40)} value={_short(d.value)}"
        )
        typer.echo(f"{'':11}{mask_numbers_in(d.detail)[:150]}")
    typer.echo(f"{len(found)} dead letters")


@app.command("replay")
def replay_(
    error: ErrorFilter = None,
    since: Since = None,
    until: Until = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
    ] = False,
    actor_name: ActorName = None,
    as_json: Json = False,
) -> None:
    """Re-publish dead letters to the input topic with their original key, value and headers.

    Run it after fixing the cause. Replaying twice sends no SMS twice: the fallbacks already
    requested are SKIPPED duplicate.
    """
    found = _select(error, since, until)
    sent = 0 if dry_run else run(replay(settings(), found, actor=actor(actor_name)))
    if as_json:
        emit_json(
            {
                "dryRun": dry_run,
                "count": len(found),
                "sent": sent,
                "records": [
                    {**_as_dict(d), "headers": [k for k, _ in replay_headers(d)]} for d in found
                ],
            }
        )
        return
    verb = "would send" if dry_run else "sent"
    for d in found:
        typer.echo(
            f"{verb} {d.partition}@{d.offset} key={_short(d.key, 40)} value={_short(d.value)}"
        )
    typer.echo(f"{len(found)} dead letters {verb} to {settings().input_topic}")
