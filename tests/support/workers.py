"""Celery workers (`anonymizer worker`) as processes of their own, for the Celery mode's tests."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anonymization_api.jobs.celery_mode import create_celery
from anonymization_api.settings import ApiSettings
from anonymizer_tools.processes import anonymizer_command


class Worker:
    def __init__(self, name: str, process: subprocess.Popen) -> None:
        self.name, self.process = name, process

    def kill(self) -> None:
        """kill -9 of the worker and its pool processes: nothing of Celery's own clean-up runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def worker(name: str, broker: str, data_dir: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[Worker]:
    """A worker of one process, started in a session of its own (so it can be killed whole); yields
    once it answers a ping."""
    args = ["worker", "--broker", broker, "--data-dir", str(data_dir), "--name", name, "--concurrency", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(
            anonymizer_command(args, log_level="info"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    the_worker = Worker(name, process)
    app = create_celery(ApiSettings(broker_url=broker, data_dir=data_dir))
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(destination=[name], timeout=1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
        yield the_worker
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                the_worker.kill()
        app.close()
