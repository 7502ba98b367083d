"""`fallback-service run`: the service in the foreground, configured by FALLBACK_* variables."""

import asyncio
import logging
import os

import typer


def run() -> None:
    """Run the service in the foreground. SIGTERM or SIGINT stops it cleanly."""
    # Imported here: the service pulls in more than the other verbs need.
    from service import logs
    from service.config import load_settings, unknown_variables
    from service.runtime.compose import build_service
    from service.runtime.serve import collect_less, serve

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    for name in unknown_variables(os.environ):
        logging.getLogger("fallback.config").warning(
            "%s is not a setting of this service and is ignored (a typo?)", name
        )

    async def _serve() -> int:
        # The service's asyncio objects belong to the loop that runs it.
        service = build_service(settings)
        collect_less()  # process-wide, so here rather than in `serve` (tests call that)
        return await serve(service)

    code = asyncio.run(_serve())
    if code:
        raise typer.Exit(code)
