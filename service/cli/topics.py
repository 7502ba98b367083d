"""`fallback-service topics`: create the contract's topics and the service's internal ones."""

from typing import Annotated

import typer

from service.cli._common import Json, emit_json, run, settings
from service.ops.topics import create_topics

app = typer.Typer(help="The topics the service reads and writes.")


@app.command("create")
def create(
    partitions: Annotated[
        int, typer.Option(min=1, help="Partitions of the data topics (input, outputs, internal).")
    ] = 6,
    replication: Annotated[int, typer.Option(min=1, help="Replication factor.")] = 1,
    as_json: Json = False,
) -> None:
    """Create what is missing (the two tables compacted); running it again is harmless."""
    done = run(create_topics(settings(), partitions=partitions, replication=replication))
    if as_json:
        emit_json(done)
        return
    for name, what in done.items():
        typer.echo(f"{what:<8} {name}")
