"""`fallback-service find`: everything the topics say about one fallback (§6, §7, §8)."""

from typing import Annotated, Any

import typer

from service.cli._common import Json, emit_json, fail, parse_time, run, settings, shown_time
from service.logs import mask_number, mask_numbers_in
from service.ops.find import find as find_story


def _request(request: dict[str, Any]) -> dict[str, Any]:
    masked = dict(request)
    for field in ("recipientNo", "sendNo"):
        if isinstance(masked.get(field), str):
            masked[field] = mask_number(masked[field])
    if isinstance(masked.get("body"), str):
        masked["body"] = mask_numbers_in(masked["body"])
    return masked


def find(
    fallback_id: Annotated[str, typer.Argument(help="{requestId}:{recipientSeq}")],
    since: Annotated[
        str | None, typer.Option(help="Only from this time on (ISO time, a date, or 15m/2h ago).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Its outcome(s), its SMS request (numbers masked) and its dead letter, if any, then
    the answer: its final outcome (DELIVERED, UNDELIVERED, EXPIRED) or where it stands.

    Exit status 1 when the topics know nothing of it.
    """
    story = run(find_story(settings(), fallback_id, since=parse_time(since, "--since")))
    requests = [_request(r) for r in story.requests]
    if as_json:
        emit_json(
            {
                "fallbackId": fallback_id,
                "final": story.final,
                "answer": story.answer() if story.found else None,
                "outcomes": story.outcomes,
                "requests": requests,
                "deadLetters": [
                    {
                        "partition": d.partition,
                        "offset": d.offset,
                        "time": d.timestamp.isoformat(),
                        "error": d.error,
                        "detail": mask_numbers_in(d.detail),
                    }
                    for d in story.dead_letters
                ],
            }
        )
    else:
        for o in story.outcomes:
            said = " ".join(
                str(part)
                for part in (o.get("status"), o.get("reason"), o.get("type"), o.get("bodyBytes"))
                if part
            )
            typer.echo(f"outcome     {said} at {o.get('processedAt')}")
        for r in requests:
            typer.echo(
                f"request     {r['type']} {r['bodyBytes']}B from {r['sendNo']} "
                f"to {r['recipientNo']} at {r['createdAt']}: {r['body'][:60]!r}"
            )
        for d in story.dead_letters:
            typer.echo(
                f"dead letter {d.error} at {shown_time(d.timestamp)} ({d.partition}@{d.offset}): "
                f"{mask_numbers_in(d.detail)[:120]}"
            )
        if story.found:
            typer.echo(f"answer      {story.answer()}")
    if not story.found:
        fail(f"nothing about {fallback_id} in the topics")
