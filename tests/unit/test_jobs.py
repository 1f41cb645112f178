"""Video jobs with stand-in anonymisation: the job manager's states, files, bounds, owners and
restarts, and the one runtime's steps, over the real SQLite store and a real (tiny) video."""

import asyncio
import functools
import json
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from anonymization_api.errors import InferenceUnavailable, JobNotDone, QueueFull, ResultGone, UnknownJob
from anonymization_api.jobs import (
    JobManager,
    JobRecord,
    JobState,
    LocalCaller,
    SqliteJobStore,
    describe,
    job_request,
    output_name,
    runner,
    upload_path,
)
from anonymization_api.jobs.manager import RESTARTED
from anonymization_api.jobs.runner import JobContext, run_here, run_step
from anonymization_api.media.video import probe
from anonymization_api.schemas import VideoChoices
from anonymization_api.settings import ApiSettings
from tests.support.videos import make_video


@dataclass(frozen=True)
class Key:
    key_id: str | None
    is_admin: bool = False


ADMIN = LocalCaller()


@functools.cache
def clip_bytes() -> bytes:
    """A real video of three frames, which the runtime probes before the stand-in anonymises it."""
    with tempfile.TemporaryDirectory() as folder:
        return make_video(Path(folder) / "clip.mp4", frames=3, audio=False).path.read_bytes()


@pytest.fixture
def data(tmp_path):
    return tmp_path


def upload(data_dir, name="clip.mp4"):
    path = upload_path(data_dir, name)
    path.write_bytes(clip_bytes())
    return path


def settings_of(data_dir, **changes) -> ApiSettings:
    return ApiSettings(data_dir=data_dir, video_segment_seconds=0, **changes)


def manager(data_dir, anonymise, workers=1, queue_size=1, **changes) -> JobManager:
    settings = settings_of(data_dir, video_workers=workers, video_queue=queue_size, **changes)
    jobs = JobManager(SqliteJobStore(settings.jobs_db), settings, anonymise)
    jobs.recover()
    return jobs


async def writes(ctx, window, output):
    output.write_bytes(b"anonymised")
    progress = ctx.progress(window.index)
    progress.frames_done = progress.frames_total = 3
    progress.report(final=True)


def leftovers(data_dir) -> list[str]:
    """Uploads and files in the videos folder (hidden partial files and segment folders included)."""
    found = [p.name for p in (data_dir / ".uploads").iterdir()] if (data_dir / ".uploads").exists() else []
    videos = data_dir / "anonymized_videos"
    return found + ([p.name for p in videos.iterdir()] if videos.exists() else [])


REQUEST = job_request("{}", VideoChoices())


async def submit(jobs, data_dir, caller=ADMIN, name="clip.mp4"):
    return await jobs.submit(caller, name, upload(data_dir, name), REQUEST)


def test_a_finished_job_has_its_output_and_no_input_or_partial_left(data):
    async def scenario():
        jobs = manager(data, writes)
        job = await submit(jobs, data, name="my clip.mp4")
        job = await jobs.wait(job.id)
        path = await jobs.result(ADMIN, job.id)
        await jobs.close()
        return job, path

    job, path = asyncio.run(scenario())
    assert job.state is JobState.DONE and path.read_bytes() == b"anonymised"
    assert re.fullmatch(r"Anonymized_my_clip_\d\d_\d\d_\d\d_\d\d_\d\d_\d\d\.mp4", path.name)
    assert leftovers(data) == [path.name]
    described = describe(job)
    assert described.state == "done" and described.result_url == f"/jobs/{job.id}/result"
    assert described.output == path.name and described.frames_done == described.frames_total == 3  # no server path


def test_a_failed_job_leaves_nothing_and_keeps_the_status_of_its_error(data):
    async def fails(ctx, window, output):
        output.write_bytes(b"half")
        raise InferenceUnavailable("inference server http://127.0.0.1:1/ is unavailable")

    async def scenario():
        jobs = manager(data, fails)
        job = await jobs.wait((await submit(jobs, data)).id)
        await jobs.close()
        return job

    job = asyncio.run(scenario())
    assert job.state is JobState.FAILED and job.error_status == 503 and "unavailable" in job.error
    assert leftovers(data) == []


async def slow(ctx, window, output):
    """Writes part of a video, then works on until it is cancelled (checked between 'batches')."""
    output.write_bytes(b"part")
    progress = ctx.progress()
    for _ in range(600):
        progress.frames_done += 1
        progress.report()
        ctx.check()
        await asyncio.sleep(0.05)


def test_cancel_of_a_running_and_queued_jobs_all_at_once_leaves_nothing(data):
    async def scenario():
        jobs = manager(data, slow, workers=1, queue_size=16)
        submitted = [await submit(jobs, data, name=f"v{i}.mp4") for i in range(17)]
        while (await jobs.get(ADMIN, submitted[0].id)).state is not JobState.RUNNING:
            await asyncio.sleep(0.01)
        ids = [job.id for job in submitted] * 2  # each twice: the second finds it cancelled already
        answers = await asyncio.gather(*(jobs.delete(ADMIN, job_id) for job_id in ids))
        left = leftovers(data)
        await jobs.close()
        return answers, left

    answers, left = asyncio.run(scenario())
    assert {answer.state for answer in answers} == {JobState.CANCELLED}
    assert left == []


def test_beyond_workers_and_queue_the_answer_is_429(data):
    async def scenario():
        jobs = manager(data, slow, workers=1, queue_size=0)
        await submit(jobs, data, name="a.mp4")
        with pytest.raises(QueueFull) as refused:
            await submit(jobs, data, name="b.mp4")
        await jobs.close()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_another_keys_job_does_not_exist_for_it_and_admins_see_all(data):
    alice, bob = Key("alice"), Key("bob")

    async def scenario():
        jobs = manager(data, writes, queue_size=4)
        mine = await jobs.wait((await submit(jobs, data, alice)).id)
        await jobs.wait((await submit(jobs, data, bob)).id)
        for attempt in (jobs.get, jobs.result, jobs.delete):
            with pytest.raises(UnknownJob):
                await attempt(bob, mine.id)
        listed = {
            name: [job.owner for job in await jobs.list(who)]
            for name, who in (("alice", alice), ("bob", bob), ("admin", Key("ops", True)))
        }
        path = await jobs.result(alice, mine.id)
        await jobs.close()
        return listed, path

    listed, path = asyncio.run(scenario())
    assert listed == {"alice": ["alice"], "bob": ["bob"], "admin": ["alice", "bob"]}
    assert path.is_file()  # bob's delete removed nothing


def test_delete_of_a_finished_job_removes_its_file_and_a_vanished_file_is_410(data):
    async def scenario():
        jobs = manager(data, writes, queue_size=4)
        first = await jobs.wait((await submit(jobs, data, name="a.mp4")).id)
        second = await jobs.wait((await submit(jobs, data, name="b.mp4")).id)
        deleted = await jobs.delete(ADMIN, first.id)
        again = await jobs.delete(ADMIN, first.id)
        errors = []
        with pytest.raises(ResultGone) as gone:
            await jobs.result(ADMIN, first.id)
        errors.append(str(gone.value))
        (await jobs.result(ADMIN, second.id)).unlink()  # removed behind the service's back
        with pytest.raises(ResultGone) as gone:
            await jobs.result(ADMIN, second.id)
        errors.append(str(gone.value))
        await jobs.close()
        return deleted, again, errors

    deleted, again, errors = asyncio.run(scenario())
    assert deleted.state is JobState.DELETED and again.state is JobState.DELETED
    assert leftovers(data) == []
    assert "was deleted" in errors[0] and "removed outside the service" in errors[1]


def test_a_restart_fails_interrupted_jobs_removes_their_files_and_keeps_finished_ones(data):
    async def first_life():
        jobs = manager(data, writes, queue_size=4)
        done = await jobs.wait((await submit(jobs, data, name="done.mp4")).id)
        # What a killed process leaves: a job running and one queued, their uploads, partial files.
        store = jobs.store
        for job_id, name, state in (
            ("0" * 12, "running.mp4", JobState.RUNNING),
            ("1" * 12, "queued.mp4", JobState.QUEUED),
        ):
            source = upload(data, name)
            output = f"Anonymized_{name[:-4]}.mp4"
            store.create(JobRecord(job_id, None, name, source.name, output, {}, state))
            (data / "anonymized_videos" / f".Anonymized_{name[:-4]}.mp4.x1y2.partial").write_bytes(b"half")
        assert len(leftovers(data)) == 5  # two uploads, two partial files, the result
        stray = data / "anonymized_videos" / ".Anonymized_x.mp4.abc123.partial"
        stray.write_bytes(b"half")
        (data / "anonymized_videos" / ".work-feedfeedfeed" / "segment-0001.mp4").parent.mkdir()
        (data / "anonymized_videos" / ".work-feedfeedfeed" / "segment-0001.mp4").write_bytes(b"x")
        store.close()
        return done

    done = asyncio.run(first_life())

    async def second_life():
        jobs = manager(data, writes)
        listed = {job.name: job for job in await jobs.list(ADMIN)}
        path = await jobs.result(ADMIN, done.id)
        await jobs.close()
        return listed, path

    listed, path = asyncio.run(second_life())
    assert listed["done.mp4"].state is JobState.DONE and path.is_file()
    for name in ("running.mp4", "queued.mp4"):
        assert listed[name].state is JobState.FAILED and listed[name].error == RESTARTED
    assert leftovers(data) == [path.name]


def test_a_result_is_only_there_once_done(data):
    async def scenario():
        jobs = manager(data, slow)
        job = await submit(jobs, data)
        with pytest.raises(JobNotDone):
            await jobs.result(ADMIN, job.id)
        await jobs.close()
        return await asyncio.to_thread(SqliteJobStore(data / "jobs" / "jobs.sqlite3").get, job.id)

    stopped = asyncio.run(scenario())
    assert stopped.state is JobState.FAILED and stopped.error == RESTARTED  # stopping the service stops it
    assert leftovers(data) == []


def test_output_names_follow_bmw():
    when = datetime(2026, 3, 4, 5, 6, 7)
    assert output_name("street view.final.MP4", when) == "Anonymized_street_view_04_03_26_05_06_07.mp4"
    assert output_name("street view.final.MP4", when, 2).endswith("_07_2.mp4")
    assert len(output_name("x" * 300 + ".mp4", when)) < 160
    assert "/" not in output_name("../../etc/passwd\x00.mp4", when)


def test_one_key_has_at_most_its_quota_of_live_jobs(data):
    alice, bob = Key("alice"), Key("bob")

    async def scenario():
        jobs = manager(data, slow, queue_size=8, jobs_per_key=2)
        for _ in range(2):
            await submit(jobs, data, alice)
        with pytest.raises(QueueFull) as refused:
            await submit(jobs, data, alice)
        await submit(jobs, data, bob)  # a quota per key, not for everyone
        await jobs.close()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 429 and "ANONYMIZER_API_JOBS_PER_KEY" in str(refused)


async def full_disk(ctx, window, output):
    """Writes the way a full disk answers: /dev/full fails every write with ENOSPC, from the kernel."""
    with open("/dev/full", "wb", buffering=0) as out:
        out.write(b"frame")


def test_a_job_whose_output_does_not_fit_fails_with_507_and_leaves_nothing(data):
    async def scenario():
        jobs = manager(data, full_disk)
        job = await jobs.wait((await submit(jobs, data)).id)
        await jobs.close()
        return job

    job = asyncio.run(scenario())
    assert job.state is JobState.FAILED and job.error_status == 507 and "did not fit" in job.error
    assert leftovers(data) == []


def run_record(data, record_request, anonymise=writes, **limits) -> JobRecord:
    """One job run by the runtime from a record as a store would hand it over, under `limits`."""
    settings = settings_of(data, **limits)
    store = SqliteJobStore(settings.jobs_db)
    record = JobRecord("a" * 12, None, "clip.mp4", upload(data).name, "Anonymized_clip.mp4", record_request)
    store.create(record)
    ctx = JobContext(record, settings, store)
    asyncio.run(run_step(ctx, run_here(ctx, anonymise)))
    try:
        return store.get(record.id)
    finally:
        store.close()


def test_the_limits_of_the_process_running_a_job_hold_whatever_the_api_accepted(data):
    job = run_record(data, REQUEST, max_video_pixels=100 * 100)  # the clip is 480x270
    assert job.state is JobState.FAILED and job.error_status == 413 and "480x270" in job.error
    assert leftovers(data) == []


def test_a_record_with_choices_beyond_their_bounds_is_not_run(data):
    request = json.loads(json.dumps(REQUEST))
    request["choices"]["hold_seconds"] = 1e9
    job = run_record(data, request)
    assert job.state is JobState.FAILED and job.error_status == 400 and "hold_seconds" in job.error
    assert leftovers(data) == []


def test_a_step_reads_its_input_once(data, monkeypatch):
    """The step checks the input once, for its cuts and its frames alike (the real probe, counted)."""
    read = []
    monkeypatch.setattr(runner, "probe", lambda *args: read.append(args) or probe(*args))

    async def probes_and_writes(ctx, window, output):
        assert (await ctx.probe()).width == 480  # as the real anonymise_window does
        await writes(ctx, window, output)

    job = run_record(data, REQUEST, probes_and_writes)
    assert job.state is JobState.DONE and len(read) == 1, job.error
