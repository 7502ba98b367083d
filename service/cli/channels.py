"""`fallback-service channels`: per-channel fallback settings (§3), put, get, list, delete."""

from typing import Annotated, Any

import typer

from service.cli._common import ActorName, Json, actor, emit_json, fail, run, settings
from service.core.models import ChannelSettings
from service.ops.tables import CHANNELS, delete_channel, put_channel, read_table

app = typer.Typer(help="Per-channel fallback settings (the channel-settings topic).")


def _as_dict(sender_key: str, channel: ChannelSettings) -> dict[str, Any]:
    return {"senderKey": sender_key, **channel.model_dump(mode="json")}


def _show(sender_key: str, channel: ChannelSettings) -> str:
    fields = channel.model_dump(exclude_none=True)
    shown = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "enabled")
    state = "enabled" if channel.enabled else "disabled"
    return f"{sender_key:<24} {state:<9} {shown}"


@app.command("put")
def put(
    sender_key: Annotated[str, typer.Argument(help="The channel's sender key.")],
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Fallback on or off.")
    ] = None,
    send_no: Annotated[str | None, typer.Option(help="The channel's sender number.")] = None,
    title: Annotated[str | None, typer.Option(help="Default LMS title.")] = None,
    unsubscribe_no: Annotated[
        str | None, typer.Option(help="080 opt-out number for advertising fallbacks.")
    ] = None,
    ad_name: Annotated[
        str | None, typer.Option(help="The sender's name after (광고) in advertising fallbacks.")
    ] = None,
    result_codes: Annotated[
        str | None,
        typer.Option(help="Only these Kakao result codes fall back (comma-separated; '' for all)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Write exactly these fields (default: merge).")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse a sender number that is not ACTIVE.")
    ] = False,
    actor_name: ActorName = None,
    as_json: Json = False,
) -> None:
    """Create or change a channel; validated as the service validates it before writing.

    Nothing is written when nothing would change (exit status 0, and it says so)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "enabled": enabled,
            "sendNo": send_no,
            "title": title,
            "unsubscribeNo": unsubscribe_no,
            "adName": ad_name,
        }.items()
        if v is not None
    }
    if result_codes is not None:
        codes = [c.strip() for c in result_codes.split(",") if c.strip()]
        changes["resultCodes"] = codes or None
    if not changes and not replace:
        message = f"channel {sender_key}: nothing to change (give an option); nothing written"
        if as_json:
            emit_json({"senderKey": sender_key, "changed": False})
        typer.echo(message, err=as_json)
        return
    who = actor(actor_name)
    change = run(
        put_channel(settings(), sender_key, changes, replace=replace, strict=strict, actor=who)
    )
    for warning in change.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        emit_json(
            {
                **_as_dict(sender_key, change.settings),
                "warnings": change.warnings,
                "changed": change.changed,
            }
        )
    elif change.changed:
        typer.echo(f"put {_show(sender_key, change.settings)}")
    else:
        typer.echo(f"unchanged {_show(sender_key, change.settings)} (nothing written)")


@app.command("get")
def get(
    sender_key: Annotated[str, typer.Argument(help="The channel's sender key.")],
    as_json: Json = False,
) -> None:
    """Show one channel's settings (exit status 1 when there is no such channel)."""
    channel = run(read_table(settings(), CHANNELS)).get(sender_key)
    if channel is None:
        fail(f"no channel {sender_key!r}")
    if as_json:
        emit_json(_as_dict(sender_key, channel))
    else:
        typer.echo(_show(sender_key, channel))


@app.command("list")
def list_(as_json: Json = False) -> None:
    """Every configured channel."""
    channels = run(read_table(settings(), CHANNELS))
    if as_json:
        emit_json([_as_dict(k, v) for k, v in sorted(channels.items())])
        return
    for key, channel in sorted(channels.items()):
        typer.echo(_show(key, channel))
    typer.echo(f"{len(channels)} channels")


@app.command("delete")
def delete(
    sender_key: Annotated[str, typer.Argument(help="The channel's sender key.")],
    actor_name: ActorName = None,
    as_json: Json = False,
) -> None:
    """Remove a channel (a tombstone): its fallbacks become SKIPPED channel_not_configured."""
    run(delete_channel(settings(), sender_key, actor=actor(actor_name)))
    if as_json:
        emit_json({"senderKey": sender_key, "deleted": True})
    else:
        typer.echo(f"deleted channel {sender_key}")
