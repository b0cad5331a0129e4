"""Who may look and who may act: the dashboard's rules, as decisions without I/O.

The dashboard can retry, discard and replay events, so it is guarded like an admin page:

- **Loopback by default.** Bound to anything else it refuses to start without a token
  (:func:`check_bind`): an outbox's topics, keys and errors are not for the whole network.
- **A token, when one is set**, is asked once on a login form and exchanged for a random session
  cookie (``HttpOnly``, ``SameSite=Strict``); scripts may send ``Authorization: Bearer TOKEN``.
  The token never appears in a URL, so it never lands in a log, a history or a ``Referer``.
- **Cross-site requests cannot act.** Every state-changing request is a POST carrying a CSRF token
  that must equal the ``outboxkit_csrf`` cookie (another site can neither read that cookie nor set
  it), and a POST whose ``Origin`` (or ``Sec-Fetch-Site``) says it came from another site is refused.
- **DNS rebinding.** A loopback dashboard without a token answers only requests whose ``Host`` is
  a loopback name: a hostile page whose name resolves to 127.0.0.1 gets nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from outboxkit.errors import ConfigurationError

SESSION_COOKIE = "outboxkit_session"
CSRF_COOKIE = "outboxkit_csrf"
SESSION_TTL_S = 12 * 3600
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach; unknown names count as not loopback."""
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, option: str = "--token") -> None:
    """Refuse (one line, at start-up) a dashboard reachable from other machines without a token."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 16`)"
        )
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"the dashboard on {host} is reachable from other machines: set a token "
            f"({option} or OUTBOXKIT_DASHBOARD_TOKEN) or bind to 127.0.0.1"
        )


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8080`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


@dataclass
class Guard:
    """The rules for one dashboard. ``token=None`` means open to whoever reaches the socket,
    which :func:`check_bind` only allows on loopback."""

    token: str | None
    bound_to_loopback: bool
    _sessions: dict[str, float] = field(default_factory=dict)

    @property
    def needs_login(self) -> bool:
        return self.token is not None

    def host_allowed(self, host_header: str | None) -> bool:
        if self.token is not None or not self.bound_to_loopback:
            return True  # the token protects it, whatever name the client used
        return host_header is not None and is_loopback(host_name(host_header))

    def authenticated(self, authorization: str | None, session: str | None, *, now: float | None = None) -> bool:
        if self.token is None:
            return True
        if authorization is not None and self.bearer_ok(authorization):
            return True
        if session is None:
            return False
        expires = self._sessions.get(session)
        if expires is None:
            return False
        if expires < (time.monotonic() if now is None else now):
            del self._sessions[session]
            return False
        return True

    def bearer_ok(self, authorization: str | None) -> bool:
        if self.token is None or authorization is None:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def login(self, offered: str, *, now: float | None = None) -> str | None:
        """A new session id when ``offered`` is the token, else None."""
        if self.token is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (time.monotonic() if now is None else now) + SESSION_TTL_S
        return session

    def logout(self, session: str | None) -> None:
        if session is not None:
            self._sessions.pop(session, None)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, submitted: str | None) -> bool:
    """The double-submit check: the form's token equals the cookie's, and both exist."""
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())


def same_origin(origin: str | None, fetch_site: str | None, host_header: str | None) -> bool:
    """False when the browser says the request came from another site. A request without ``Origin``
    and ``Sec-Fetch-Site`` (curl, an old browser) passes here and is judged by its CSRF token."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null" or host_header is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()
