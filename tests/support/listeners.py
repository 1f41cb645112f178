"""Loopback stand-ins for inference servers in the registry tests: a TCP listener that records
every request it gets and answers as a test says (JSON, a redirect, an endless or trickling body,
no HTTP at all), to check what the API sends where and how it copes with what comes back; and a
proxy that records what reaches a real server."""

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Self

import httpx

Answer = Callable[[BinaryIO], None]  # writes the raw answer to the connection
ENDLESS_LIMIT = 1024**3  # "endless" bodies stop here, so that a client that reads them all cannot take the machine


def head(status: int, headers: Mapping[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_json(status: int, content: Any) -> Answer:
    body = json.dumps(content).encode() if not isinstance(content, bytes) else content
    return lambda out: out.write(head(status, {"Content-Length": str(len(body))}) + body)


def redirect(location: str, status: int = 302) -> Answer:
    return lambda out: out.write(head(status, {"Location": location, "Content-Length": "0"}))


def endless(status: int = 200) -> Answer:
    """A body without a length that goes on (to ENDLESS_LIMIT) for as long as the client reads."""

    def write(out: BinaryIO) -> None:
        out.write(head(status, {"Content-Type": "application/json"}) + b"[")
        chunk = b'{"name": "m"},' * 4096
        for _ in range(ENDLESS_LIMIT // len(chunk)):
            out.write(chunk)

    return write


def trickle(answer: bytes, every_s: float = 1.0, start: int = 0) -> Answer:
    """`answer` (raw, head included): the first `start` bytes at once, then one byte every `every_s`."""

    def write(out: BinaryIO) -> None:
        out.write(answer[:start])
        out.flush()
        for index in range(start, len(answer)):
            time.sleep(every_s)
            out.write(answer[index : index + 1])
            out.flush()

    return write


def answer_oip(outputs: Mapping[str, Any]) -> Answer:
    """An Open Inference Protocol answer with `outputs` (name -> numpy array) as binary tensors."""
    from anonymizer_shared import wire

    described = [
        {
            "name": name,
            "datatype": wire.datatype_of(array),
            "shape": list(array.shape),
            "parameters": {"binary_data_size": array.nbytes},
        }
        for name, array in outputs.items()
    ]
    header = json.dumps({"model_name": "m", "outputs": described}).encode()
    body = header + b"".join(array.tobytes() for array in outputs.values())
    headers = {"Content-Length": str(len(body)), wire.HEADER_LENGTH: str(len(header))}
    return lambda out: out.write(head(200, headers) + body)


def hang_up(out: BinaryIO) -> None:
    """Accept the request and close the connection without an answer."""


def never(out: BinaryIO) -> None:
    """Accept the request and never answer (the connection stays open while the listener runs)."""
    time.sleep(3600)


def wait_discovered(client: Any, url: str) -> None:
    """Poll an in-process API's /servers until `url` has been discovered (in the background, at start)."""
    for _ in range(200):
        if any(s["url"] == url and s["available"] for s in client.get("/servers").json()["data"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} was not discovered")


OIP_READY = {"GET /v2/health/ready": answer_json(200, b""), "POST /v2/repository/index": answer_json(200, [])}


def oip_model(
    name: str, task: str = "detection", labels: tuple[str, ...] = ("face",), defaults: dict | None = None
) -> dict[str, Answer]:
    parameters = {"task": {"string_value": task}, "labels": {"string_value": json.dumps(list(labels))}}
    if defaults:
        parameters["defaults"] = {"string_value": json.dumps(defaults)}
    return {
        "POST /v2/repository/index": answer_json(200, [{"name": name, "state": "READY"}]),
        f"GET /v2/models/{name}/config": answer_json(200, {"name": name, "parameters": parameters}),
    }


class Served:
    """A loopback server (`_server`) that serves on a thread of its own while the `with` block lasts."""

    _server: socketserver.BaseServer

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Listener(Served):
    """`answers` maps "METHOD /path" to an Answer; others are 404. `requests` holds each request's
    "METHOD /path", and `hosts` its Host header, in the order they came."""

    def __init__(self, answers: Mapping[str, Answer] | None = None, host: str = "127.0.0.1") -> None:
        self.answers = dict(answers or {})
        self.requests: list[str] = []
        self.hosts: list[str] = []
        listener = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request_line = self.rfile.readline(8192).decode("latin-1").split()
                headers = {}
                while (line := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                self.rfile.read(int(headers.get("content-length", 0)))
                if len(request_line) < 2:
                    return
                key = f"{request_line[0]} {request_line[1]}"
                listener.requests.append(key)
                listener.hosts.append(headers.get("host", ""))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client had enough
                    listener.answers.get(key, answer_json(404, {"error": "not found"}))(self.wfile)

        self._server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/"


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers (nothing accepts beyond the backlog)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


class CountingProxy(Served):
    """A loopback HTTP proxy in front of a real server that records each request's "METHOD /path"
    as `Listener` does, so a test counts what a client asks of the real server (its discovery, its
    inferences) while the answers stay the server's own."""

    def __init__(self, target: str) -> None:
        self.requests: list[str] = []
        proxy, client = self, httpx.Client(base_url=target.rstrip("/"), timeout=60)

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                proxy.requests.append(f"{self.command} {self.path}")
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = client.request(self.command, self.path, content=body, headers=headers)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = forward

            def log_message(self, *args: object) -> None:
                pass

        self._client = client
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def count(self, request: str) -> int:
        return self.requests.count(request)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._client.close()
