"""Video jobs without video: the job manager's states, files and bounds, with stand-in work."""

import asyncio
import re
from datetime import datetime

import pytest

from anonymization_api.errors import InferenceUnavailable
from anonymization_api.jobs import JobManager, JobState, QueueFull, output_path


def upload(tmp_path, name="clip.mp4"):
    path = tmp_path / "uploads" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"input")
    return path


async def writes(output, progress, is_cancelled):
    output.write_bytes(b"anonymised")
    progress.frames_done = progress.frames_total = 3


def test_a_finished_job_has_its_output_and_no_input_or_partial_left(tmp_path):
    async def scenario():
        jobs = JobManager(tmp_path / "out", workers=1, queue_size=1)
        job = jobs.submit("my clip.mp4", upload(tmp_path), writes)
        await jobs.wait(job)
        return job

    job = asyncio.run(scenario())
    assert job.state is JobState.DONE and job.output.read_bytes() == b"anonymised"
    assert re.fullmatch(r"Anonymized_my_clip_\d\d_\d\d_\d\d_\d\d_\d\d_\d\d\.mp4", job.output.name)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [job.output.name]
    assert not list((tmp_path / "uploads").iterdir())
    described = job.describe()
    assert described.state == "done" and described.result_url == f"/jobs/{job.id}/result"


def test_a_failed_job_leaves_nothing_and_keeps_the_status_of_its_error(tmp_path):
    async def fails(output, progress, is_cancelled):
        output.write_bytes(b"half")
        raise InferenceUnavailable("inference server http://127.0.0.1:1/ is unavailable")

    async def scenario():
        jobs = JobManager(tmp_path / "out", workers=1, queue_size=1)
        job = jobs.submit("clip.mp4", upload(tmp_path), fails)
        await jobs.wait(job)
        return job

    job = asyncio.run(scenario())
    assert job.state is JobState.FAILED and job.error_status == 503 and "unavailable" in job.error
    assert not list((tmp_path / "out").iterdir()) and not list((tmp_path / "uploads").iterdir())


def test_cancel_of_a_running_and_a_queued_job_leaves_nothing(tmp_path):
    started = asyncio.Event()

    async def slow(output, progress, is_cancelled):
        output.write_bytes(b"part")
        started.set()
        await asyncio.sleep(30)

    async def scenario():
        jobs = JobManager(tmp_path / "out", workers=1, queue_size=1)
        running = jobs.submit("a.mp4", upload(tmp_path, "a.mp4"), slow)
        queued = jobs.submit("b.mp4", upload(tmp_path, "b.mp4"), slow)
        await started.wait()
        await asyncio.gather(jobs.cancel(running.id), jobs.cancel(queued.id), jobs.cancel(running.id))
        return running, queued

    running, queued = asyncio.run(scenario())
    assert running.state is JobState.CANCELLED and queued.state is JobState.CANCELLED
    assert not list((tmp_path / "out").iterdir()) and not list((tmp_path / "uploads").iterdir())


def test_beyond_workers_and_queue_the_answer_is_429(tmp_path):
    async def scenario():
        jobs = JobManager(tmp_path / "out", workers=1, queue_size=0)
        jobs.submit("a.mp4", upload(tmp_path, "a.mp4"), writes)
        with pytest.raises(QueueFull) as refused:
            jobs.submit("b.mp4", upload(tmp_path, "b.mp4"), writes)
        await jobs.shutdown()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.retry_after_s > 0


def test_output_names_follow_bmw_and_never_collide(tmp_path):
    when = datetime(2026, 3, 4, 5, 6, 7)
    first = output_path(tmp_path, "street view.final.MP4", when, set())
    assert first.name == "Anonymized_street_view_04_03_26_05_06_07.mp4"
    assert output_path(tmp_path, "street view.final.MP4", when, {first}).name.endswith("_07_2.mp4")
    long = output_path(tmp_path, "x" * 300 + ".mp4", when, set())
    assert len(long.name) < 160
    assert output_path(tmp_path, "../../etc/passwd\x00.mp4", when, set()).parent == tmp_path
