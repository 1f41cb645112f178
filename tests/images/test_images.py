"""Every image's command, started as the image runs it. No Docker engine runs here, so each image
is reproduced as its Dockerfile builds it: a virtual environment of its own holding the project
installed non-editable (one wheel, as the Triton image installs it) with that image's extra alone,
then the image's own command started from that environment:

- the inference image (`.[inference]`): `anonymizer models fetch` into an empty folder, then
  `anonymizer serve-detection` and `anonymizer serve-segmentation` answer ready with their models,
  and `anonymizer triton-repo` writes the Triton image's repository;
- the API image (`.[api]`): `anonymizer serve-api` answers /health, and the compose `worker`
  service's `anonymizer worker --concurrency 1`, on a real Redis, takes a video job the API
  queued and finishes it against that detection server, the face hidden.

Importing the CLI must not import what an image does not install: each environment imports it
and lists what it pulled in.
"""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from anonymizer_tools.processes import free_port, redis_server, stop, wait_until_ready
from tests.integration.test_api_video import FAST, assert_faces_hidden, result, submit
from tests.support.api import wait_job
from tests.support.videos import make_video, read_frames

ROOT = Path(__file__).resolve().parents[2]
PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
# What each image must not hold (its pyproject extra does not name it), so importing the CLI
# there must not try.
ABSENT = {"api": ["openvino", "nncf", "skimage"], "inference": ["celery", "redis", "av", "tritonclient"]}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(ROOT)],
        check=True,
    )
    return next(folder.glob("anonymizer-*.whl"))


def image_environment(folder: Path, wheel: Path, extra: str) -> Path:
    """A virtual environment as the image of `extra` holds it; returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "python"), *PIP, f"{wheel}[{extra}]"], check=True)
    return folder / "bin"


@pytest.fixture(scope="module")
def inference_bin(tmp_path_factory, wheel) -> Path:
    return image_environment(tmp_path_factory.mktemp("inference-image"), wheel, "inference")


@pytest.fixture(scope="module")
def api_bin(tmp_path_factory, wheel) -> Path:
    return image_environment(tmp_path_factory.mktemp("api-image"), wheel, "api")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a container: none of the test run's own ANONYMIZER_ settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANONYMIZER_")}
    return {**env, "ANONYMIZER_LOG_FORMAT": "text", **extra}


@contextmanager
def serving(command: list[str], ready: str, log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    try:
        wait_until_ready(ready, process, timeout_s=600, log=log)
        yield process
    finally:
        stop(process)


@pytest.mark.parametrize("extra", ["api", "inference"])
def test_the_cli_of_an_image_imports_nothing_the_image_lacks(extra, request):
    bin_folder = request.getfixturevalue(f"{extra}_bin")
    probe = (
        "import sys, anonymizer_tools.cli as cli; cli.build_parser();"
        f"print(sorted(m for m in {ABSENT[extra]!r} if m in sys.modules))"
    )
    answer = subprocess.run([str(bin_folder / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "[]", answer.stdout
    help_text = subprocess.run([str(bin_folder / "anonymizer"), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "serve-api" in help_text.stdout, help_text.stderr
    for lacking in ABSENT[extra]:  # the image really lacks it: the check above is not vacuous
        missing = subprocess.run([str(bin_folder / "python"), "-c", f"import {lacking}"], capture_output=True)
        assert missing.returncode != 0, lacking


@pytest.fixture(scope="module")
def inference_image(inference_bin, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The inference image's build step (`models fetch`) and its two services, as compose runs them."""
    folder = tmp_path_factory.mktemp("inference-run")
    models = folder / "models"
    fetched = subprocess.run(
        [str(inference_bin / "anonymizer"), "models", "fetch", "--models-dir", str(models)],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    env = clean_env(ANONYMIZER_MODELS_DIR=str(models), ANONYMIZER_INFERENCE_HOST="127.0.0.1")
    urls = {"models": str(models)}
    with contextlib.ExitStack() as stack:
        for service in ("detection", "segmentation"):  # each as its compose service runs it
            port = free_port()
            urls[service] = f"http://127.0.0.1:{port}"
            command = [str(inference_bin / "anonymizer"), f"serve-{service}"]
            own = {**env, "ANONYMIZER_INFERENCE_PORT": str(port)}
            stack.enter_context(serving(command, f"{urls[service]}/v2/health/ready", folder / f"{service}.log", own))
        yield urls


def test_the_inference_image_serves_its_models_and_writes_the_triton_repository(
    inference_image, inference_bin, tmp_path
):
    for service, wanted in (("detection", "centerface"), ("segmentation", None)):
        models = httpx.get(f"{inference_image[service]}/models", timeout=30).json()["data"]["models"]
        assert models and (wanted is None or wanted in models), (service, models)
        for model in models:
            assert httpx.get(f"{inference_image[service]}/v2/models/{model}/ready", timeout=30).status_code == 200
    repository = tmp_path / "models-repo"
    command = [str(inference_bin / "anonymizer"), "triton-repo", str(repository)]
    written = subprocess.run(
        [*command, "--models-dir", inference_image["models"], "--python-path", ""],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert written.returncode == 0, written.stderr[-3000:]
    assert list(repository.glob("*/config.pbtxt")), sorted(p.name for p in repository.iterdir())


def test_the_api_image_serves_and_its_worker_finishes_a_job_from_redis(api_bin, inference_image, tmp_path):
    data = tmp_path / "data"
    with redis_server(tmp_path) as broker:
        env = clean_env(ANONYMIZER_API_DATA_DIR=str(data), ANONYMIZER_BROKER_URL=broker)
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        worker = [str(api_bin / "anonymizer"), "worker", "--concurrency", "1"]  # the compose worker's command
        api_env = {**env, "ANONYMIZER_API_PORT": str(port)}
        with (
            serving([str(api_bin / "anonymizer"), "serve-api"], f"{api}/health", tmp_path / "api.log", api_env),
            worker_running(worker, tmp_path / "worker.log", env),
        ):
            httpx.post(f"{api}/set_url", data={"url": inference_image["detection"]}, timeout=60).raise_for_status()
            source = make_video(tmp_path / "clip.mp4", frames=12)
            job = wait_job(api, submit(api, source.path, FAST).json()["data"]["id"], timeout=300)
            # in the Celery mode only a worker runs jobs: done means the worker took it from Redis
            assert job["state"] == "done", (job, (tmp_path / "worker.log").read_text()[-3000:])
            frames, _, _ = read_frames(result(api, job, tmp_path))
            assert_faces_hidden(source, frames)


@contextmanager
def worker_running(command: list[str], log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    try:
        yield
    finally:
        stop(process)
