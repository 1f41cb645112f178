"""The data folder on a disk that is full: a real file system of 2 MB (tmpfs) filled to the last
byte, under the real API and detection server. Nothing is lost, every answer is a 507 that says
why, and it all works again once there is room."""

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_api_video import FAST, submit
from tests.support.api import wait_job
from tests.support.servers import FAST_REDISCOVERY, running
from tests.support.videos import make_video


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small file system cannot be mounted here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system says ENOSPC; the file that holds the space."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def test_a_full_data_folder_answers_507_and_nothing_half_written_stays(tmp_path, detection_url):
    clip = make_video(tmp_path / "clip.mp4", frames=6)
    with small_disk(tmp_path / "disk") as disk:
        data = disk / "data"
        with running(
            ["serve-api", "--data-dir", str(data)], "/health", tmp_path / "api.log", env=FAST_REDISCOVERY
        ) as api:
            assert httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).status_code == 200
            filler = fill(disk)
            removed = httpx.post(f"{api}/remove_url", data={"url": detection_url}, timeout=60)
            assert removed.status_code == 507 and "storage is full" in removed.json()["error"], removed.text
            registered = [detection_url.rstrip("/") + "/"]
            assert httpx.get(f"{api}/list_urls").json()["data"]["urls"] == registered  # what is served is stored
            job = submit(api, clip.path, FAST)
            assert job.status_code == 507 and "storage is full" in job.json()["error"], job.text
            assert list((data / ".uploads").iterdir()) == []  # the partial upload went

            filler.unlink()  # room again: the same requests succeed
            done = wait_job(api, submit(api, clip.path, FAST).json()["data"]["id"])
            assert done["state"] == "done", done


def test_a_job_whose_output_does_not_fit_fails_with_507_saying_so(tmp_path, detection_url):
    """The videos folder on a disk of its own (as a mounted volume is), full: the upload and the job
    records have room, the output has none."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(640, 360))
    data = tmp_path / "data"
    with small_disk(tmp_path / "disk", size="1m") as disk:
        data.mkdir()
        (data / "anonymized_videos").symlink_to(disk)
        with running(
            ["serve-api", "--data-dir", str(data)], "/health", tmp_path / "api.log", env=FAST_REDISCOVERY
        ) as api:
            assert httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).status_code == 200
            fill(disk)
            answer = submit(api, clip.path, FAST)
            assert answer.status_code == 202, answer.text
            job = wait_job(api, answer.json()["data"]["id"])
            assert job["state"] == "failed" and "did not fit" in job["error"], job
            assert [p.name for p in disk.iterdir()] == ["filler"] and list((data / ".uploads").iterdir()) == []
