"""The audit record of an operator's change (§10): who changed which table's key, from what to
what, through which door (`cli` or `console`). Written to the audit topic with the change."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from service.core.rules import timestamp


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, and through what."""

    name: str
    via: str = "cli"


def default_actor() -> str:
    """The operating-system user, as the CLI's `--actor` defaults to."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return os.environ.get("USER") or f"uid:{os.getuid()}"


def audit_record(
    actor: Actor,
    table: str,
    key: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> bytes:
    """The audit topic's value for one change (its key is `key`)."""
    return orjson.dumps(
        {
            "at": timestamp(now),
            "actor": actor.name,
            "via": actor.via,
            "table": table,
            "key": key,
            "before": before,
            "after": after,
        }
    )
