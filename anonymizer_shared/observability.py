"""What every service reports about its HTTP requests, the same way: the request id (see
`anonymizer_shared.logs`: accepted from `X-Request-ID` or made, echoed in the answer, carried by
every log line), Prometheus metrics in the service's own registry (requests and their latency per
route template and status, requests refused per reason) served at `GET /metrics`, and one access
log line per request."""

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anonymizer_shared.logs import REQUEST_ID_HEADER, accept_request_id, request_id

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "other"
# Latency buckets up to minutes: /anonymize_video answers once the whole video is written.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Answers that refuse the work rather than fail at it, by what the client should do about them.
REJECTIONS = {413: "body_too_large", 429: "queue_full", 503: "unavailable"}
_HEADER = REQUEST_ID_HEADER.lower().encode()

access_log = logging.getLogger("anonymizer.access")


class HttpMetrics:
    """The metrics every service keeps of its HTTP requests; services add their own in a subclass."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        labels = ["method", "route", "status"]
        self.requests = Counter("anonymizer_http_requests", "HTTP requests answered", labels, registry=registry)
        self.latency = Histogram(
            "anonymizer_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "anonymizer_rejected_requests", "Requests refused, by reason", ["reason"], registry=registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)
        if status in REJECTIONS:
            self.rejected.labels(REJECTIONS[status]).inc()


class RequestObservability:
    """ASGI middleware: the request id, the metrics and the access log line of every HTTP request.

    Pure ASGI (it only watches `send`), so streamed answers such as a ranged FileResponse pass
    through untouched; their latency runs to the last byte."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(_HEADER, b"").decode("latin-1")
        current = accept_request_id(given)
        token = request_id.set(current)
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (_HEADER, current.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
        # Reset only on success: an exception goes on to the server's error handler, outside this
        # middleware, which should log it with the id (each request runs in its own task anyway).
        request_id.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        if route == METRICS_PATH:  # scrapes would drown the requests that matter
            return
        method = scope["method"]
        self.metrics.observe(method, route, status, seconds)
        access_log.info(
            "%s %s %d %.1f ms",
            method,
            scope["path"],
            status,
            seconds * 1000,
            extra={
                "method": method,
                "route": route,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            },
        )


def route_template(scope: Scope) -> str:
    """The matched route's path template, never the raw path, so that the labels stay few. A
    request refused before routing (a body over the limit by its Content-Length) has none."""
    path = getattr(scope.get("route"), "path", None)  # set by the router once it matched
    if not path:
        return UNMATCHED_ROUTE
    return path.rstrip("/") or "/"  # BMW's clients use both spellings of a route: one label


def add_observability(app: FastAPI, metrics: HttpMetrics, dependencies: Sequence[Any] = ()) -> None:
    """Put the request middleware on `app` (outermost of its own middleware, so it sees every
    answer, the body limit's too) and serve `metrics.registry` at GET /metrics, behind
    `dependencies` (the API's admin check: its metrics name the inference servers)."""

    async def metrics_endpoint() -> Response:
        # in a thread: collectors may read a store (the API's job counts), which blocks
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        METRICS_PATH, metrics_endpoint, methods=["GET"], include_in_schema=False, dependencies=list(dependencies)
    )
    app.add_middleware(RequestObservability, metrics=metrics)
