"""`fallback-service`: the command line, one module per verb (`run`, `preview`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service.cli import preview, run
from service.config import ConfigError

VERBS = {"run": run, "preview": preview}


def parser() -> argparse.ArgumentParser:
    """The whole command line: every verb adds its own sub-parser."""
    top = argparse.ArgumentParser(
        prog="fallback-service",
        description="AlimTalk to SMS/LMS fallback delivery (대체발송).",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS.values():
        verb.add_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fallback-service` console script."""
    top = parser()
    args = top.parse_args(argv)
    try:
        code: int = VERBS[args.command].main(args, top)
        return code
    except ConfigError as exc:
        print(f"fallback-service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
