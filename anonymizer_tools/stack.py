"""`anonymizer up`: the whole stack on loopback as child processes, stopped together on Ctrl-C.

Each server runs in its own process (one per service, as in the Docker deployment) so that a
crash in one is seen, reported and ends the stack instead of leaving it half up.
"""

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from anonymizer_tools.processes import anonymizer_command, stop, wait_until_ready

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Child:
    name: str
    args: tuple[str, ...]
    ready_url: str


def _wait_ready(children: dict[str, subprocess.Popen], specs: list[Child]) -> None:
    for spec in specs:  # all start in parallel; waiting in turn costs nothing
        try:
            wait_until_ready(spec.ready_url, children[spec.name], READY_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{spec.name}: {exc}") from exc
        logger.info("%s ready at %s", spec.name, spec.ready_url)


def _stop(children: dict[str, subprocess.Popen]) -> None:
    for process in children.values():
        if process.poll() is None:
            process.terminate()
    for process in children.values():
        stop(process)


def run_stack(specs: list[Child], log_level: str, on_ready: Callable[[], None] | None = None) -> int:
    """Start every child, wait until all answer, then supervise until Ctrl-C or a child dies."""
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for spec in specs:
            children[spec.name] = subprocess.Popen(anonymizer_command(spec.args, log_level))
        _wait_ready(children, specs)
        if on_ready is not None:
            on_ready()
        logger.info("stack ready; Ctrl-C stops it")
        while not stopping:
            for name, process in children.items():
                if process.poll() is not None:
                    logger.error("%s exited with %s; stopping the stack", name, process.returncode)
                    return 1
            time.sleep(0.5)
        return 0
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stack_children(
    api_port: int, detection_port: int, segmentation_port: int, data_dir: Path | None, models_dir: Path | None
) -> tuple[list[Child], Callable[[], None]]:
    """The API and both inference servers, and the step that registers the servers with the API."""
    api_extra = ("--data-dir", str(data_dir)) if data_dir else ()
    api = Child("api", ("serve-api", "--port", str(api_port), *api_extra), f"http://127.0.0.1:{api_port}/health")
    inference = inference_children(detection_port, segmentation_port, models_dir)

    def register() -> None:
        for port in (detection_port, segmentation_port):
            url = f"http://127.0.0.1:{port}/"
            response = httpx.post(f"http://127.0.0.1:{api_port}/set_url", data={"url": url}, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"registering {url} failed: {response.text}")
            logger.info("registered %s", url)
        logger.info("the API is at http://127.0.0.1:%s/ (docs: /docs)", api_port)

    return [*inference, api], register


def inference_children(detection_port: int, segmentation_port: int, models_dir: Path | None) -> list[Child]:
    extra = ("--models-dir", str(models_dir)) if models_dir else ()
    return [
        Child(
            "detection",
            ("serve-detection", "--port", str(detection_port), *extra),
            f"http://127.0.0.1:{detection_port}/v2/health/ready",
        ),
        Child(
            "segmentation",
            ("serve-segmentation", "--port", str(segmentation_port), *extra),
            f"http://127.0.0.1:{segmentation_port}/v2/health/ready",
        ),
    ]
