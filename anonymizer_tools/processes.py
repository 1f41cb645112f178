"""Our servers as child processes: start one on a free loopback port, wait until it answers, stop it.
Used by `anonymizer up`, the benchmarks and the integration tests; likewise a redis-server of one's
own and Celery workers (`anonymizer worker`) for the Celery mode."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from anonymizer_shared.files import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def anonymizer_command(args: list[str] | tuple[str, ...], log_level: str = "warning") -> list[str]:
    return [sys.executable, "-m", "anonymizer_tools.cli", "--log-level", log_level, *args]


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float = 300.0, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; raises if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"server exited with {process.returncode} while starting\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log else ""
    raise RuntimeError(f"not ready at {url} after {timeout_s:.0f} s\n{tail}")


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running(
    args: list[str],
    ready_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_level: str = "warning",
) -> Iterator[str]:
    """Run `anonymizer ARGS --port P` (a free port unless given); yields its URL once `ready_path` answers."""
    with started(args, ready_path, log, env, port, log_level=log_level) as (url, _process):
        yield url


@contextmanager
def started(
    args: list[str],
    ready_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    ready_timeout_s: float = 300.0,
    log_level: str = "warning",
) -> Iterator[tuple[str, subprocess.Popen]]:
    """As `running`, yielding the process too (its pid, for what it uses)."""
    port = port or free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            anonymizer_command([*args, "--port", str(port)], log_level),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + ready_path, process, ready_timeout_s, log=log)
        yield base, process
    finally:
        stop(process)


def peak_rss_mb(pid: int) -> float:
    """The largest resident memory the process has had (VmHWM), in MB."""
    return _status_mb(pid, "VmHWM")


def resident_mb(pid: int) -> float:
    """The resident memory the process has now (VmRSS), in MB."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A redis-server of one's own on a free loopback port, persisting nothing; yields its URL once it
    answers PING."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not on PATH; scripts/test-system-packages installs it (apt-get install redis-server)"
        )
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with (folder / "redis.log").open("w") as log:
        process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {(folder / 'redis.log').read_text()}") from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        stop(process)


class Worker:
    def __init__(self, name: str, process: subprocess.Popen) -> None:
        self.name, self.process = name, process

    def kill(self) -> None:
        """kill -9 of the worker and its pool processes: nothing of Celery's own clean-up runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def celery_worker(
    name: str, broker: str, data_dir: Path, log: Path, env: dict[str, str] | None = None, queues: str | None = None
) -> Iterator[Worker]:
    """`anonymizer worker` of one process, in a session of its own (so that it can be killed whole);
    yields once it answers a ping."""
    from anonymization_api.jobs.celery_mode import create_celery
    from anonymization_api.settings import ApiSettings

    args = ["worker", "--broker", broker, "--data-dir", str(data_dir), "--name", name, "--concurrency", "1"]
    args += ["--queues", queues] if queues else []
    with log.open("w") as out:
        process = subprocess.Popen(
            anonymizer_command(args, log_level="info"),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    worker = Worker(name, process)
    app = create_celery(ApiSettings(broker_url=broker, data_dir=data_dir))
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(destination=[name], timeout=1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
        yield worker
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        app.close()
