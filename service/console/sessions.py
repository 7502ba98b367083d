"""Console sessions and the brake on failed logins (§12); the time is passed in."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from service.console.users import Role

# Failed logins for one name or one address before each further attempt waits, and how long
# the wait may grow (doubling from one second).
FREE_FAILURES = 3
LONGEST_WAIT = 30.0
# Failures are forgotten after this long without one.
FAILURE_MEMORY = 15 * 60.0


@dataclass(slots=True)
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    last_seen: float
    # Messages for the next page (a write redirects to the page that shows its result).
    flash: list[tuple[str, str]] = field(default_factory=list)

    @property
    def may_write(self) -> bool:
        return self.role is Role.OPERATOR

    def csrf_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())


@dataclass
class Sessions:
    """Sessions in memory, ended after `idle` seconds without a request (a restarted console
    asks everyone to log in again)."""

    idle: float
    _open: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str, role: Role, now: float) -> Session:
        session = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), now)
        self._open[session.token] = session
        return session

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session of `token`, its idle clock restarted; None when unknown or expired."""
        if not token:
            return None
        session = self._open.get(token)
        if session is None:
            return None
        if now - session.last_seen > self.idle:
            del self._open[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._open.pop(token, None)

    def end_user(self, user: str) -> None:
        """End every session of `user` (their account changed)."""
        for token in [t for t, s in self._open.items() if s.user == user]:
            del self._open[token]

    def sweep(self, now: float) -> None:
        for token in [t for t, s in self._open.items() if now - s.last_seen > self.idle]:
            del self._open[token]


@dataclass
class LoginBrake:
    """Counts failed logins per user name and per client address; after `FREE_FAILURES` of
    either, each attempt waits 1, 2, 4 … up to `LONGEST_WAIT` seconds before it is checked."""

    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def wait(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds the next attempt with these keys waits before its password is checked."""
        worst = 0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if now - last > FAILURE_MEMORY:
                continue
            worst = max(worst, count)
        if worst < FREE_FAILURES:
            return 0.0
        return min(LONGEST_WAIT, 2.0 ** (worst - FREE_FAILURES))

    def failed(self, keys: tuple[str, ...], now: float) -> int:
        """Count a failure; the most failures any of the keys has now."""
        most = 0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            count = 1 if now - last > FAILURE_MEMORY else count + 1
            self._failures[key] = (count, now)
            most = max(most, count)
        if len(self._failures) > 100_000:  # a spray of names must not grow it without end
            for key in [k for k, (_, t) in self._failures.items() if now - t > FAILURE_MEMORY]:
                del self._failures[key]
        return most

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)
