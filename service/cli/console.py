"""`fallback-service console`: the operator console (§12), and `console add-user` for its
accounts."""

import asyncio
import getpass
import logging
import os
import sys
from typing import Annotated

import typer

from service.cli._common import fail, settings

app = typer.Typer(
    help="The operator console: channels, sender numbers, send query, dead letters, audit.",
    invoke_without_command=True,
)

MIN_PASSWORD = 10


@app.callback()
def console(context: typer.Context) -> None:
    """Serve the console on FALLBACK_CONSOLE_HOST:FALLBACK_CONSOLE_PORT (127.0.0.1:8081) until
    SIGTERM or SIGINT. It refuses to start without FALLBACK_CONSOLE_USERS_FILE and a user."""
    if context.invoked_subcommand is not None:
        return
    from service import logs
    from service.config import unknown_variables
    from service.console.serve import serve_console
    from service.console.users import UsersFileError

    chosen = settings()
    logs.configure(chosen.log_level, chosen.log_format)
    for name in unknown_variables(os.environ):
        logging.getLogger("fallback.config").warning(
            "%s is not a setting of this service and is ignored (a typo?)", name
        )
    try:
        code = asyncio.run(serve_console(chosen))
    except UsersFileError as exc:
        print(f"fallback-service: console: FALLBACK_CONSOLE_USERS_FILE: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            fail("the passwords differ; nothing written")
        return first
    return sys.stdin.readline().rstrip("\r\n")


@app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="The user name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option("--role", help="viewer (reads) or operator (also changes).")],
) -> None:
    """Add NAME to FALLBACK_CONSOLE_USERS_FILE, or replace its line; the password is read from
    standard input (asked twice on a terminal) and stored as an scrypt hash."""
    from service.console.users import Role, UsersFileError, add_user, valid_name

    if not valid_name(name):
        raise typer.BadParameter(
            f"{name!r}: 1-64 letters, digits, '.', '_', '@' or '-'", param_hint="NAME"
        )
    try:
        chosen = Role(role.strip().lower())
    except ValueError:
        raise typer.BadParameter(
            f"{role!r} is not viewer or operator", param_hint="--role"
        ) from None
    path = settings().console_users_file
    if not path:
        fail("FALLBACK_CONSOLE_USERS_FILE is not set: say which file holds the accounts")
    password = _password()
    if len(password) < MIN_PASSWORD:
        fail(f"a password has at least {MIN_PASSWORD} characters; nothing written")
    try:
        add_user(path, name, chosen, password)
    except UsersFileError as exc:
        fail(f"{path}: {exc}; nothing written")
    typer.echo(f"{name} ({chosen.value}) written to {path}")
