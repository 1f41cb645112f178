"""HTTP rules every service of the product follows: a request body is bounded on the stream, so
neither a false Content-Length nor a chunked upload gets more bytes in than the limit; and pages
of other sites cannot make a visitor's browser call the service (by their Origin, and for a
service without keys by its Host too)."""

import ipaddress
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    status_code = 413


# (request path, status, message) -> the answer, in the service's own error format
Responder = Callable[[str, int, str], Response]


class BodyLimit:
    """ASGI middleware: 413 before reading a body whose Content-Length exceeds the path's limit
    (`per_path`, else `max_bytes`), and `BodyTooLarge` from `receive` once more bytes than that have
    arrived, answered as 413 where the answer has not started yet."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, respond: Responder, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # paths that take larger bodies (video uploads)
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.per_path.get(path, self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            message = f"request body of {int(length)} bytes exceeds the limit of {limit} bytes"
            await self.respond(path, 413, message)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self.respond(path, 413, str(exc))(scope, receive, send)


class LoopbackHostOnly:
    """ASGI middleware for a service without API keys: 421 for a request whose Host header is not a
    loopback name. Such a service trusts whoever reaches it, so it listens on loopback; but a page
    of another site can make the visitor's browser reach it under the site's own name, re-pointed
    to 127.0.0.1 (DNS rebinding), and then its Origin matches that Host. Only a loopback name in the
    Host header shows the request was meant for this machine's service."""

    def __init__(self, app: ASGIApp, respond: Responder, fix: str) -> None:
        self.app = app
        self.respond = respond
        self.fix = fix  # how to reach the service by another name: the keys setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not is_loopback_host(host):
                message = (
                    f"the Host {host[:100]!r} is not a loopback name: without API keys this service answers only "
                    f"requests addressed to 127.0.0.1, [::1] or localhost; use one of those, or {self.fix}"
                )
                await self.respond(scope.get("path", ""), 421, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback_host(host: str) -> bool:
    """Whether a Host header (name or address, with or without a port) names this machine's loopback."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name == "localhost" or name.endswith(".localhost"):  # browsers resolve these to loopback themselves
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class SameOriginOnly:
    """ASGI middleware: 403 for a request a browser sends from another site's page (its `Origin` is
    neither this service's own nor an allowed one). Without it, any page a user visits could post
    forms to the service on the user's machine; clients that are not browsers send no Origin."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str], respond: Responder) -> None:
        self.app = app
        self.allowed = allowed
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/")
            own = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'').decode('latin-1')}"
            if origin and origin != own and origin not in self.allowed:
                message = f"requests from pages of {origin[:100]} are not allowed; ask an administrator to allow it"
                await self.respond(scope.get("path", ""), 403, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
