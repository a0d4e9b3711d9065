"""Who may read the dashboard and who may change the journal through it.

The rules, in one place:

- Every request needs the dashboard's token: the page URL carries it once (``?token=``), after
  which it lives in an HttpOnly, SameSite=Strict cookie that scripts cannot read and other
  sites' pages never send. Scripts may send it as the ``X-Outbox-Token`` header instead.
  No token: 401. A wrong one: 403.
- A request whose ``Host`` is not one of the dashboard's own names is refused (403), so a page
  on another site that re-points its DNS name to 127.0.0.1 cannot reach it.
- Changes are POSTs with a JSON body, and a POST that rides on the cookie must come with an
  ``Origin`` naming this host (browsers send it on every POST); a foreign ``Origin`` or a
  cross-site ``Sec-Fetch-Site`` is refused whatever the token. So another page open in the same
  browser cannot make the browser act for it (CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

TOKEN_HEADER = "HTTP_X_OUTBOX_TOKEN"
MIN_TOKEN_LENGTH = 16


class Refused(Exception):
    """The request is not allowed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Guard:
    """Checks requests (WSGI environs) against the token, the host names and the origin.

    ``allowed_hosts`` are the ``Host`` values (``name:port``) the dashboard answers to; None
    accepts any (when it is mounted in an app that checks hosts itself, or served on an
    explicit ``--host``).
    """

    def __init__(self, token: str, allowed_hosts: Collection[str] | None = None) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"the dashboard token must be a string of at least {MIN_TOKEN_LENGTH} characters"
            )
        self._token = token.encode()
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )
        # One cookie per dashboard (cookies ignore ports): two dashboards never clobber each
        # other's, and the name gives nothing away about the token.
        self.cookie_name = "outbox_" + hashlib.sha256(self._token).hexdigest()[:12]

    def matches(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the token (in constant time)."""
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def cookie(self, path: str) -> str:
        """The ``Set-Cookie`` value that stores the token in the browser."""
        return f"{self.cookie_name}={self._token.decode()}; Path={path}; HttpOnly; SameSite=Strict"

    def check_host(self, environ: Mapping[str, Any]) -> None:
        if self.allowed_hosts is None:
            return
        host = str(environ.get("HTTP_HOST", "")).lower()
        if host not in self.allowed_hosts:
            raise Refused(
                403, f"this dashboard answers to {', '.join(sorted(self.allowed_hosts))} only"
            )

    def check_read(self, environ: Mapping[str, Any]) -> str:
        """Refuse a request without the right token; returns where the token came from."""
        self.check_host(environ)
        header = environ.get(TOKEN_HEADER)
        if header is not None:
            if not self.matches(str(header)):
                raise Refused(403, "wrong dashboard token")
            return "header"
        cookie = self._cookie_token(environ)
        if cookie is None:
            raise Refused(
                401,
                "this dashboard needs its token: open the URL that `outbox dashboard` printed",
            )
        if not self.matches(cookie):
            raise Refused(403, "wrong dashboard token (the dashboard restarted?): open its URL")
        return "cookie"

    def check_write(self, environ: Mapping[str, Any]) -> None:
        """Refuse a state change that is not a same-origin JSON POST with the token."""
        if environ.get("REQUEST_METHOD") != "POST":
            raise Refused(405, "changes are made with POST only")
        source = self.check_read(environ)
        site = environ.get("HTTP_SEC_FETCH_SITE")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"refused a {site} request: changes come from this page only")
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            if source == "cookie":
                raise Refused(403, "refused a change without an Origin header")
        elif urlsplit(str(origin)).netloc.lower() != str(environ.get("HTTP_HOST", "")).lower():
            raise Refused(403, f"refused a change from another origin ({origin})")
        kind = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if kind != "application/json":
            raise Refused(415, "changes take a JSON body (Content-Type: application/json)")

    def _cookie_token(self, environ: Mapping[str, Any]) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(str(environ.get("HTTP_COOKIE", "")))
        except CookieError:
            return None
        morsel = jar.get(self.cookie_name)
        return None if morsel is None else morsel.value
