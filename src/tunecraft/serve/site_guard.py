"""What keeps a web page from driving a local server (`tunecraft serve`, `tunecraft studio`): a request whose
Host is not this server's (DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1) is
refused with 400; a state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as cross-site (its
Origin is not the Host, or Sec-Fetch-Site: cross-site) with 403, with or without an API key; and, where a token
is set (the studio's, new at each start), a state-changing request without it with 403. A client that is not a
browser sends no Origin and no Sec-Fetch-Site, so curl, httpx and the openai client pass with the right Host.

Written by hand, not Starlette's TrustedHostMiddleware: that one checks the Host only, answers a bare text, and
knows nothing of Origin or a token."""

from __future__ import annotations

import hmac
import ipaddress
import json
import urllib.parse
from collections.abc import Iterable

LOOPBACK = ("localhost", "127.0.0.1", "::1")
"""Host names always accepted: the loopback names a browser on this machine uses."""
EVERY_INTERFACE = ("0.0.0.0", "::")
"""Bound addresses meaning every interface: then any IP-literal Host is this machine's (an IP cannot be rebound)."""
ANY = "*"
"""In --allowed-hosts: accept every Host (for a proxy that rewrites it; the Origin check still holds)."""
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
TOKEN_HEADER = "X-Tunecraft-Token"
TOKEN_MESSAGE = (f"missing or wrong {TOKEN_HEADER}: the studio's own pages send it (a new one at each start, in "
                 "their <meta name=\"tunecraft-token\">); requests that change state need it")


def host_name(host: str) -> str:
    """The name of a Host header's value, lower case, without its port or a trailing dot: `[::1]:8000` → `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _endpoint(netloc: str, default_port: int) -> tuple[str | None, int | None]:
    """(host name, port) of `host[:port]`, the port defaulting to the scheme's."""
    parts = urllib.parse.urlsplit("//" + netloc)
    try:
        return parts.hostname, parts.port or default_port
    except ValueError:  # a port that is not a number
        return parts.hostname, None


class SiteGuard:
    """ASGI middleware, before the routes and the API key. `bound`: the address the server listens on;
    `allowed`: the hosts the user allows beside it and LOOPBACK (`*`: any); `token`: needed on state-changing
    requests (None: no token), except on `open_paths` (prefixes)."""

    def __init__(self, app, bound: str, allowed: Iterable[str] = (), token: str | None = None,
                 open_paths: tuple[str, ...] = ()):
        self.app, self.token, self.open_paths = app, token, open_paths
        self.extra = {host_name(h) for h in allowed if h != ANY}
        self.any_host = ANY in allowed
        self.every_interface = bound in EVERY_INTERFACE
        self.hosts = {*LOOPBACK, host_name(bound), *self.extra}

    def host_refusal(self, host: str | None) -> str | None:
        if host is None:
            return "the request has no Host header"
        name = host_name(host)
        if self.any_host or name in self.hosts or (self.every_interface and _is_ip(name)):
            return None
        return (f"Host '{host}' is not this server's: it answers to {', '.join(sorted(self.hosts))} (a page whose "
                f"name resolves here is refused: DNS rebinding); allow more with --allowed-hosts {name}")

    def origin_refusal(self, method: str, host: str, origin: str | None, fetch_site: str | None) -> str | None:
        """A cross-site state-changing request: Origin not this Host (nor an allowed host), or Sec-Fetch-Site."""
        if fetch_site == "cross-site":
            return f"cross-site {method} refused (Sec-Fetch-Site: cross-site): open this server's own page instead"
        if origin is None:
            return None
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme in ("http", "https") and parts.hostname is not None:
            default = 443 if parts.scheme == "https" else 80
            if _endpoint(parts.netloc, default) == _endpoint(host, default) or parts.hostname in self.extra:
                return None
        return f"cross-site {method} refused: Origin {origin} is not this server ({host})"

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get(b"host")
        problem = self.host_refusal(host)
        if problem:
            return 400, problem
        method = scope["method"]
        if method not in STATE_CHANGING:
            return None
        problem = self.origin_refusal(method, host, headers.get(b"origin"), headers.get(b"sec-fetch-site"))
        if problem:
            return 403, problem
        if self.token is not None and not scope["path"].startswith(self.open_paths):
            given = headers.get(TOKEN_HEADER.lower().encode(), "")
            if not hmac.compare_digest(given.encode("latin-1"), self.token.encode()):
                return 403, TOKEN_MESSAGE
        return None

    async def __call__(self, scope, receive, send):
        refused = self.refusal(scope) if scope["type"] == "http" else None
        if refused is None:
            return await self.app(scope, receive, send)
        status, detail = refused
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
