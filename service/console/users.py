"""The console's accounts (§12): `name:role:hash` lines, scrypt hashes, read and written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# scrypt's cost: 16 MiB and ~50 ms a hash here; what OWASP's password storage sheet asks for
# as a minimum (N=2^17 would take a second of the console's CPU per login).
_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


class Role(StrEnum):
    """`viewer` reads; `operator` also changes tables and replays dead letters."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64), the format of the users file."""
    chosen = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=chosen, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024, dklen=32
    )
    return f"scrypt${_N}${_R}${_P}${_b64(chosen)}${_b64(digest)}"


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; constant time in the comparison, False for a bad hash."""
    try:
        scheme, n, r, p, salt, expected = password_hash.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=256 * 1024 * 1024,
            dklen=len(base64.b64decode(expected)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def parse_users(text: str) -> dict[str, User]:
    """The accounts of a users file; blank lines and `#` comments are skipped."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(":", 2)
        if len(parts) != 3:
            raise UsersFileError(f"line {number}: expected name:role:hash")
        name, role, password_hash = parts
        if not valid_name(name):
            raise UsersFileError(f"line {number}: {name!r} is not a user name")
        try:
            chosen = Role(role)
        except ValueError:
            raise UsersFileError(
                f"line {number}: role {role!r} is not viewer or operator"
            ) from None
        if not password_hash.startswith("scrypt$") or password_hash.count("$") != 5:
            raise UsersFileError(f"line {number}: the hash is not an scrypt hash of add-user")
        users[name] = User(name, chosen, password_hash)
    return users


def with_user(text: str, user: User) -> str:
    """The users file `text` with `user`'s line added, or replacing the line of that name."""
    line = f"{user.name}:{user.role.value}:{user.password_hash}"
    lines = text.splitlines()
    for i, existing in enumerate(lines):
        if existing.strip().split(":", 1)[0] == user.name:
            lines[i] = line
            break
    else:
        lines.append(line)
    return "\n".join(lines) + "\n"


def load_users(path: str) -> dict[str, User]:
    """The accounts of the users file; UsersFileError when it is missing, bad or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read it ({exc.strerror})") from None
    users = parse_users(text)
    if not users:
        raise UsersFileError(f"{path}: no user (fallback-service console add-user NAME)")
    return users


def add_user(path: str, name: str, role: Role, password: str) -> None:
    """Add or replace `name`'s line, written whole to a new file that replaces the old one
    (readable by its owner only)."""
    target = Path(path)
    try:
        current = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    parse_users(current)  # a broken file is not made worse
    text = with_user(current, User(name, role, hash_password(password)))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
