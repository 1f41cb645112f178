"""Start our real servers as subprocesses on free loopback ports, and stop them."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready at {url} after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(args: list[str], ready_path: str, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `anonymizer ARGS --port P` on a free port; yields its base URL once `ready_path` answers 200."""
    with running_fixed(args, free_port(), ready_path, log, env) as url:
        yield url


@contextmanager
def running_fixed(
    args: list[str], port: int, ready_path: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run `anonymizer ARGS --port PORT`; yields its base URL once `ready_path` answers 200."""
    command = [sys.executable, "-m", "anonymization_api.cli", "--log-level", "warning", *args, "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + ready_path, process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
