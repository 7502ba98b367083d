"""`fallback-service run`: the service in the foreground, configured by FALLBACK_* variables."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def add_parser(commands: Any) -> None:
    commands.add_parser(
        "run",
        help="run the service in the foreground (configured by FALLBACK_* variables)",
        description="Run the service in the foreground. SIGTERM or SIGINT stops it cleanly.",
    )


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Load the settings, set up logging, build the service and serve until a signal."""
    # Imported here: the service pulls in Kafka, which `preview` does not need.
    from service import logs
    from service.app import serve
    from service.compose import build_service
    from service.config import load_settings

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)

    async def _serve() -> int:
        # The service's asyncio objects belong to the loop that runs it.
        return await serve(build_service(settings))

    return asyncio.run(_serve())
