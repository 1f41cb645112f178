"""Video jobs without video: the job manager's states, files, bounds, owners and restarts, with
stand-in work, over the real SQLite store."""

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime

import pytest

from anonymization_api.errors import InferenceUnavailable
from anonymization_api.jobs import (
    JobManager,
    JobNotDone,
    JobRecord,
    JobState,
    LocalCaller,
    QueueFull,
    ResultGone,
    SqliteJobStore,
    UnknownJob,
    describe,
    output_name,
    upload_path,
)
from anonymization_api.jobs.manager import RESTARTED


@dataclass(frozen=True)
class Key:
    key_id: str | None
    is_admin: bool = False


ADMIN = LocalCaller()


def upload(data_dir, name="clip.mp4"):
    path = upload_path(data_dir, name)
    path.write_bytes(b"input")
    return path


def manager(data_dir, work, workers=1, queue_size=1) -> JobManager:
    jobs = JobManager(SqliteJobStore(data_dir / "jobs" / "jobs.sqlite3"), data_dir, workers, queue_size, work)
    jobs.recover()
    return jobs


async def writes(ctx, output):
    output.write_bytes(b"anonymised")
    progress = ctx.progress()
    progress.frames_done = progress.frames_total = 3
    progress.report(final=True)


def leftovers(data_dir) -> list[str]:
    """Uploads and files in the videos folder (hidden partial files and segment folders included)."""
    found = [p.name for p in (data_dir / ".uploads").iterdir()] if (data_dir / ".uploads").exists() else []
    videos = data_dir / "anonymized_videos"
    return found + ([p.name for p in videos.iterdir()] if videos.exists() else [])


async def submit(jobs, data_dir, caller=ADMIN, name="clip.mp4"):
    return await jobs.submit(caller, name, upload(data_dir, name), {"configuration": "{}", "options": {}})


def test_a_finished_job_has_its_output_and_no_input_or_partial_left(tmp_path):
    async def scenario():
        jobs = manager(tmp_path, writes)
        job = await submit(jobs, tmp_path, name="my clip.mp4")
        job = await jobs.wait(job.id)
        path = await jobs.result(ADMIN, job.id)
        await jobs.close()
        return job, path

    job, path = asyncio.run(scenario())
    assert job.state is JobState.DONE and path.read_bytes() == b"anonymised"
    assert re.fullmatch(r"Anonymized_my_clip_\d\d_\d\d_\d\d_\d\d_\d\d_\d\d\.mp4", path.name)
    assert leftovers(tmp_path) == [path.name]
    described = describe(job)
    assert described.state == "done" and described.result_url == f"/jobs/{job.id}/result"
    assert described.output == path.name and described.frames_done == described.frames_total == 3  # no server path


def test_a_failed_job_leaves_nothing_and_keeps_the_status_of_its_error(tmp_path):
    async def fails(ctx, output):
        output.write_bytes(b"half")
        raise InferenceUnavailable("inference server http://127.0.0.1:1/ is unavailable")

    async def scenario():
        jobs = manager(tmp_path, fails)
        job = await jobs.wait((await submit(jobs, tmp_path)).id)
        await jobs.close()
        return job

    job = asyncio.run(scenario())
    assert job.state is JobState.FAILED and job.error_status == 503 and "unavailable" in job.error
    assert leftovers(tmp_path) == []


async def slow(ctx, output):
    """Writes part of a video, then works on until it is cancelled (checked between 'batches')."""
    output.write_bytes(b"part")
    progress = ctx.progress()
    for _ in range(600):
        progress.frames_done += 1
        progress.report()
        ctx.check()
        await asyncio.sleep(0.05)


def test_cancel_of_a_running_and_queued_jobs_all_at_once_leaves_nothing(tmp_path):
    async def scenario():
        jobs = manager(tmp_path, slow, workers=1, queue_size=16)
        submitted = [await submit(jobs, tmp_path, name=f"v{i}.mp4") for i in range(17)]
        while (await jobs.get(ADMIN, submitted[0].id)).state is not JobState.RUNNING:
            await asyncio.sleep(0.01)
        ids = [job.id for job in submitted] * 2  # each twice: the second finds it cancelled already
        answers = await asyncio.gather(*(jobs.delete(ADMIN, job_id) for job_id in ids))
        left = leftovers(tmp_path)
        await jobs.close()
        return answers, left

    answers, left = asyncio.run(scenario())
    assert {answer.state for answer in answers} == {JobState.CANCELLED}
    assert left == []


def test_beyond_workers_and_queue_the_answer_is_429(tmp_path):
    async def scenario():
        jobs = manager(tmp_path, slow, workers=1, queue_size=0)
        await submit(jobs, tmp_path, name="a.mp4")
        with pytest.raises(QueueFull) as refused:
            await submit(jobs, tmp_path, name="b.mp4")
        await jobs.close()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.retry_after_s > 0


def test_another_keys_job_does_not_exist_for_it_and_admins_see_all(tmp_path):
    alice, bob = Key("alice"), Key("bob")

    async def scenario():
        jobs = manager(tmp_path, writes, queue_size=4)
        mine = await jobs.wait((await submit(jobs, tmp_path, alice)).id)
        await jobs.wait((await submit(jobs, tmp_path, bob)).id)
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


def test_delete_of_a_finished_job_removes_its_file_and_a_vanished_file_is_410(tmp_path):
    async def scenario():
        jobs = manager(tmp_path, writes, queue_size=4)
        first = await jobs.wait((await submit(jobs, tmp_path, name="a.mp4")).id)
        second = await jobs.wait((await submit(jobs, tmp_path, name="b.mp4")).id)
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
    assert leftovers(tmp_path) == []
    assert "was deleted" in errors[0] and "removed outside the service" in errors[1]


def test_a_restart_fails_interrupted_jobs_removes_their_files_and_keeps_finished_ones(tmp_path):
    async def first_life():
        jobs = manager(tmp_path, writes, queue_size=4)
        done = await jobs.wait((await submit(jobs, tmp_path, name="done.mp4")).id)
        # What a killed process leaves: a job running and one queued, their uploads, partial files.
        store = jobs.store
        for name, state in (("running.mp4", JobState.RUNNING), ("queued.mp4", JobState.QUEUED)):
            source = upload(tmp_path, name)
            output = f"anonymized_videos/Anonymized_{name[:-4]}.mp4"
            store.create(JobRecord(name, None, name, str(source.relative_to(tmp_path)), output, {}, state))
            (tmp_path / "anonymized_videos" / f".Anonymized_{name[:-4]}.mp4.x1y2.partial").write_bytes(b"half")
        assert len(leftovers(tmp_path)) == 5  # two uploads, two partial files, the result
        stray = tmp_path / "anonymized_videos" / ".Anonymized_x.mp4.abc123.partial"
        stray.write_bytes(b"half")
        (tmp_path / "anonymized_videos" / ".work-feed" / "segment-0001.mp4").parent.mkdir()
        (tmp_path / "anonymized_videos" / ".work-feed" / "segment-0001.mp4").write_bytes(b"x")
        store.close()
        return done

    done = asyncio.run(first_life())

    async def second_life():
        jobs = manager(tmp_path, writes)
        listed = {job.name: job for job in await jobs.list(ADMIN)}
        path = await jobs.result(ADMIN, done.id)
        await jobs.close()
        return listed, path

    listed, path = asyncio.run(second_life())
    assert listed["done.mp4"].state is JobState.DONE and path.is_file()
    for name in ("running.mp4", "queued.mp4"):
        assert listed[name].state is JobState.FAILED and listed[name].error == RESTARTED
    assert leftovers(tmp_path) == [path.name]


def test_a_result_is_only_there_once_done(tmp_path):
    async def scenario():
        jobs = manager(tmp_path, slow)
        job = await submit(jobs, tmp_path)
        with pytest.raises(JobNotDone):
            await jobs.result(ADMIN, job.id)
        await jobs.close()
        return await asyncio.to_thread(SqliteJobStore(tmp_path / "jobs" / "jobs.sqlite3").get, job.id)

    stopped = asyncio.run(scenario())
    assert stopped.state is JobState.FAILED and stopped.error == RESTARTED  # stopping the service stops it
    assert leftovers(tmp_path) == []


def test_output_names_follow_bmw():
    when = datetime(2026, 3, 4, 5, 6, 7)
    assert output_name("street view.final.MP4", when) == "Anonymized_street_view_04_03_26_05_06_07.mp4"
    assert output_name("street view.final.MP4", when, 2).endswith("_07_2.mp4")
    assert len(output_name("x" * 300 + ".mp4", when)) < 160
    assert "/" not in output_name("../../etc/passwd\x00.mp4", when)
