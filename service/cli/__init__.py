"""`fallback-service`: the command line, one module per verb, on Typer.

Exit status: 0 success, 1 a refusal or not found (one line on standard error saying what to do),
2 bad usage (usage on standard error, nothing written) or a bad configuration.
"""

import sys
from collections.abc import Sequence

import click
import typer

from service import compat
from service.cli import channels, console, dlq, find, preview, run, sendnos, tail, topics
from service.config import ConfigError

app = typer.Typer(
    name="fallback-service",
    help="AlimTalk to SMS/LMS fallback delivery (대체발송). Configured by FALLBACK_* variables.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("run")(run.run)
app.command("preview")(preview.preview)
app.add_typer(channels.app, name="channels")
app.add_typer(sendnos.app, name="sendnos")
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")
app.command("tail")(tail.tail)
app.command("find")(find.find)
app.add_typer(console.app, name="console")


_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.Abort, typer.Abort)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fallback-service` console script."""
    # The process entry installs what must be installed: a library internal that moved stops
    # here, naming `service.compat`; header keys that are not UTF-8 must not stall a partition
    # of the service, nor of a verb that reads topics (§8).
    compat.self_check()
    compat.install()
    command = typer.main.get_command(app)
    try:
        # Not standalone: an Exit's code comes back as the result instead of a SystemExit.
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="fallback-service",
            standalone_mode=False,
        )
    except compat.USAGE_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]  # usage and the error, on standard error
        raise SystemExit(2) from None
    except _EXITS as exc:
        return int(exc.exit_code)
    except _ABORTS:
        print("fallback-service: aborted", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"fallback-service: {exc}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
