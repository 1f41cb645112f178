"""HTTP rules every service of the product follows: a request body is bounded on the stream, so
neither a false Content-Length nor a chunked upload gets more bytes in than the limit."""

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    status_code = 413


# (request path, status, message) -> the answer, in the service's own error format
Responder = Callable[[str, int, str], Response]


class BodyLimit:
    """ASGI middleware: 413 before reading a body whose Content-Length exceeds `max_bytes`, and
    `BodyTooLarge` from `receive` once more bytes than that have arrived, answered as 413 where
    the answer has not started yet."""

    def __init__(self, app: ASGIApp, max_bytes: int, respond: Responder) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            message = f"request body of {int(length)} bytes exceeds the limit of {self.max_bytes} bytes"
            await self.respond(path, 413, message)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
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
