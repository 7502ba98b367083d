"""`fallback-service sendnos`: the sender-number registry (§4), put, list, delete."""

from typing import Annotated

import typer

from service.cli._common import ActorName, Json, actor, emit_json, run, settings
from service.core.models import SenderNumberStatus
from service.ops.tables import SENDER_NUMBERS, delete_sendno, put_sendno, read_table

app = typer.Typer(help="Registered sender numbers (the sender-numbers topic).")


@app.command("put")
def put(
    number: Annotated[str, typer.Argument(help="The number; -, spaces and . are ignored.")],
    status: Annotated[
        SenderNumberStatus,
        typer.Option("--status", help="ACTIVE or BLOCKED.", case_sensitive=False),
    ],
    actor_name: ActorName = None,
    as_json: Json = False,
) -> None:
    """Register a sender number, or change its status (nothing written when it has it)."""
    change = run(put_sendno(settings(), number, status.value, actor=actor(actor_name)))
    if as_json:
        emit_json(
            {"number": change.number, "status": change.status.value, "changed": change.changed}
        )
    elif change.changed:
        typer.echo(f"put {change.number} {change.status.value}")
    else:
        typer.echo(f"unchanged {change.number} {change.status.value} (nothing written)")


@app.command("list")
def list_(
    status: Annotated[
        SenderNumberStatus | None,
        typer.Option(case_sensitive=False, help="Only numbers with this status."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Every registered sender number and its status."""
    numbers = run(read_table(settings(), SENDER_NUMBERS))
    shown = sorted((k, v) for k, v in numbers.items() if status is None or v is status)
    if as_json:
        emit_json([{"number": k, "status": v.value} for k, v in shown])
        return
    for number, found in shown:
        typer.echo(f"{number:<14} {found.value}")
    typer.echo(f"{len(shown)} sender numbers")


@app.command("delete")
def delete(
    number: Annotated[str, typer.Argument(help="The number; -, spaces and . are ignored.")],
    actor_name: ActorName = None,
    as_json: Json = False,
) -> None:
    """Unregister a sender number (a tombstone)."""
    digits = run(delete_sendno(settings(), number, actor=actor(actor_name)))
    if as_json:
        emit_json({"number": digits, "deleted": True})
    else:
        typer.echo(f"deleted sender number {digits}")
