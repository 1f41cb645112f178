"""The Celery mode end to end, on loopback: a real redis-server, two real `anonymizer worker`
processes and the API with ANONYMIZER_BROKER_URL, all sharing one data folder, against our real
detection server. Segments are 1 s here, so test videos with a keyframe every second are split.
Everything else runs with the service's defaults: a lost worker's step resumes by its lease, not
by a broker time-out shortened for the test."""

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from anonymization_api.jobs.celery_mode import create_celery
from anonymization_api.jobs.leases import PREFIX
from anonymization_api.jobs.redis_store import RedisJobStore
from anonymization_api.settings import ApiSettings
from anonymizer_tools.processes import Worker, celery_worker, redis_server
from tests.integration.test_api_video import FAST, assert_faces_hidden, result, submit
from tests.support.api import face_entry, wait_job
from tests.support.images import region_change
from tests.support.listeners import CountingProxy
from tests.support.metrics import sample
from tests.support.servers import FAST_REDISCOVERY, free_port, running
from tests.support.videos import make_video, read_frames

SEGMENTS = {"ANONYMIZER_API_VIDEO_SEGMENT_SECONDS": "1"}
INFER = "POST /v2/models/centerface/infer"
LEASE_PREFIX = f"{PREFIX}lease:"
RED = json.dumps(
    {"sensitive_info": [face_entry(anonymization_technique="solid", color="#ff0000", model_parameters={"scales": "1"})]}
)


@dataclass
class Cluster:
    api: str
    broker: str
    data: Path
    env: dict[str, str]
    workers: list[Worker]
    folder: Path
    later: contextlib.ExitStack  # workers started during the tests, stopped with the cluster

    def leftovers(self) -> list[str]:
        """Uploads, partial outputs and segment folders: nothing may stay once jobs have ended."""
        uploads = self.data / ".uploads"
        found = [p.name for p in uploads.iterdir()] if uploads.exists() else []
        videos = self.data / "anonymized_videos"
        return found + [p.name for p in videos.iterdir() if p.name.startswith(".")] if videos.exists() else found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, detection_url) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("celery")
    data = folder / "data"
    with redis_server(folder) as broker:
        env = {**FAST_REDISCOVERY, "ANONYMIZER_BROKER_URL": broker, **SEGMENTS}
        with (
            contextlib.ExitStack() as later,
            celery_worker("w1@test", broker, data, folder / "w1.log", env) as w1,
            celery_worker("w2@test", broker, data, folder / "w2.log", env) as w2,
            running(["serve-api", "--data-dir", str(data)], "/health", folder / "api.log", env=env) as api,
        ):
            httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
            yield Cluster(api, broker, data, env, [w1, w2], folder, later)


def busy_worker(cluster: Cluster, job_id: str) -> Worker:
    """The worker holding the lease of one of the job's steps: killed, it leaves a lease to lapse (a
    worker killed between taking a task and leasing its step leaves it to the broker's time-out)."""
    client = redis.Redis.from_url(cluster.broker, decode_responses=True)
    try:
        for _ in range(200):
            for key in client.scan_iter(f"{LEASE_PREFIX}*:{job_id}*"):
                holder = client.get(key)  # host:pid of the pool process running the step
                with contextlib.suppress(ProcessLookupError, TypeError, ValueError):
                    group = os.getpgid(int(holder.rsplit(":", 1)[1]))
                    for candidate in cluster.workers:
                        if candidate.process.pid == group:  # each worker runs in a process group of its own
                            return candidate
            time.sleep(0.02)
    finally:
        client.close()
    raise AssertionError(f"no worker holds a lease of job {job_id}")


def test_a_batch_of_videos_completes_on_the_workers(cluster, tmp_path):
    sources = [make_video(tmp_path / f"clip{i}.mp4", frames=12) for i in range(4)]
    ids = [submit(cluster.api, source.path, FAST).json()["data"]["id"] for source in sources]
    for source, job_id in zip(sources, ids, strict=True):
        job = wait_job(cluster.api, job_id)
        assert job["state"] == "done", job
        frames, _, _ = read_frames(result(cluster.api, job, tmp_path))
        assert_faces_hidden(source, frames)
    assert cluster.leftovers() == []


def test_cancel_removes_the_workers_files(cluster, tmp_path):
    source = make_video(tmp_path / "long.mp4", frames=300, fps=25, size=(640, 360))
    job_id = submit(cluster.api, source.path, FAST).json()["data"]["id"]
    wait_job(cluster.api, job_id, until=lambda job: job["frames_done"] > 0)
    cancelled = httpx.delete(f"{cluster.api}/jobs/{job_id}", timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["data"]["state"] == "cancelled"
    assert cluster.leftovers() == []
    assert httpx.get(f"{cluster.api}/jobs/{job_id}").json()["data"]["state"] == "cancelled"


def download(api: str, job: dict, folder: Path) -> Path:
    folder.mkdir()
    return result(api, job, folder)


def segments_of(broker: str, job_id: str) -> int:
    store = RedisJobStore(broker)
    try:
        return len(store.get(job_id).segments)
    finally:
        store.close()


def test_three_segments_equal_the_embedded_mode_frame_for_frame(cluster, tmp_path, detection_url):
    source = make_video(tmp_path / "three.mp4", frames=45, fps=15, keyframe_interval=15)
    job = wait_job(cluster.api, submit(cluster.api, source.path, FAST).json()["data"]["id"])
    assert job["state"] == "done" and segments_of(cluster.broker, job["id"]) == 3
    distributed = read_frames(download(cluster.api, job, tmp_path / "celery"))
    env = {**FAST_REDISCOVERY, **SEGMENTS}
    args = ["serve-api", "--data-dir", str(tmp_path / "embedded-data")]
    with running(args, "/health", tmp_path / "e.log", env=env) as api:
        httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
        job = wait_job(api, submit(api, source.path, FAST).json()["data"]["id"])
        assert job["state"] == "done", job
        embedded = read_frames(download(api, job, tmp_path / "embedded"))
    assert len(distributed[0]) == len(embedded[0]) == 45
    assert distributed[1:] == embedded[1:]  # timestamps
    assert all(np.array_equal(a, b) for a, b in zip(distributed[0], embedded[0], strict=True))
    assert_faces_hidden(source, distributed[0])


def test_a_face_the_detector_misses_right_after_a_cut_is_hidden(cluster, tmp_path):
    """Frames 15 and 30 open segments 2 and 3, and the face is flattened there: only the overlap's
    tracking, from the frames before the cut, can hide it."""
    source = make_video(tmp_path / "cut.mp4", frames=45, fps=15, keyframe_interval=15, faded=frozenset({15, 30}))
    tracked = wait_job(cluster.api, submit(cluster.api, source.path, RED).json()["data"]["id"])
    untracked = wait_job(cluster.api, submit(cluster.api, source.path, RED, tracking="false").json()["data"]["id"])
    assert segments_of(cluster.broker, tracked["id"]) == 3
    with_tracking, _, _ = read_frames(download(cluster.api, tracked, tmp_path / "t"))
    without, _, _ = read_frames(download(cluster.api, untracked, tmp_path / "u"))
    assert [i for i in (15, 30) if region_change(source.frames[i], without[i], source.faces[i]) < 30], (
        "the flattened face should defeat the detector on its own"
    )
    for index in (14, 15, 16, 29, 30, 31):
        assert region_change(source.frames[index], with_tracking[index], source.faces[index]) > 60, index


def test_kill_9_of_a_worker_mid_segment_resumes_on_the_other_and_ends_in_one_complete_output(cluster, tmp_path):
    """The worker's whole process group is killed (a lost machine): with the default broker
    visibility time-out of an hour, only the lease brings the segment back, within seconds. Ten
    segments: the victim, found busy, is still mid-job when killed (a segment takes under a second)."""
    source = make_video(tmp_path / "killed.mp4", frames=250, fps=25, keyframe_interval=25)
    job_id = submit(cluster.api, source.path, FAST).json()["data"]["id"]
    wait_job(cluster.api, job_id, until=lambda job: job["frames_done"] > 0)
    victim = busy_worker(cluster, job_id)
    victim.kill()
    killed = time.monotonic()
    try:
        job = wait_job(cluster.api, job_id, timeout=300)
        resumed_after_s = time.monotonic() - killed
        assert job["state"] == "done", job
        assert resumed_after_s < ApiSettings().broker_visibility_timeout_s, "the broker, not the lease, resumed it"
        logs = "".join(log.read_text() for log in cluster.folder.glob("w*.log"))
        assert "was lost; the step is sent to another worker" in logs
        frames, pts, _ = read_frames(result(cluster.api, job, tmp_path))
        assert len(frames) == 250 and pts == sorted(set(pts)) and segments_of(cluster.broker, job_id) == 10
        assert_faces_hidden(source, frames)
        outputs = [p.name for p in (cluster.data / "anonymized_videos").iterdir() if "killed" in p.name]
        assert outputs == [job["output"]] and cluster.leftovers() == []
    finally:  # the other tests keep two workers
        index = cluster.workers.index(victim)
        log = cluster.folder / f"{victim.name}-again.log"
        cluster.workers[index] = cluster.later.enter_context(
            celery_worker(victim.name, cluster.broker, cluster.data, log, cluster.env)
        )


def test_an_api_restart_keeps_the_job_list_and_the_work_goes_on(cluster, tmp_path):
    source = make_video(tmp_path / "during.mp4", frames=60, fps=25)
    before = {job["id"]: job["state"] for job in httpx.get(f"{cluster.api}/jobs").json()["data"]}
    with running(
        ["serve-api", "--data-dir", str(cluster.data)], "/health", tmp_path / "api-b.log", env=cluster.env
    ) as other:
        job_id = submit(other, source.path, FAST).json()["data"]["id"]  # this replica goes away mid-job
        wait_job(other, job_id, until=lambda job: job["state"] == "running")
    with running(
        ["serve-api", "--data-dir", str(cluster.data)], "/health", tmp_path / "api-c.log", env=cluster.env
    ) as restarted:
        job = wait_job(restarted, job_id)
        assert job["state"] == "done", job
        listed = {job["id"]: job["state"] for job in httpx.get(f"{restarted}/jobs").json()["data"]}
        assert {**before, job_id: "done"}.items() <= listed.items()


def test_set_url_on_one_replica_is_seen_by_another(cluster, tmp_path, detection_url):
    registered = detection_url.rstrip("/") + "/"
    with running(
        ["serve-api", "--data-dir", str(tmp_path / "elsewhere")], "/health", tmp_path / "api-2.log", env=cluster.env
    ) as other:
        assert httpx.get(f"{other}/list_urls").json()["data"]["urls"] == [registered]
        httpx.post(f"{other}/remove_all_urls", timeout=60).raise_for_status()
        assert httpx.get(f"{cluster.api}/list_urls").json()["data"]["urls"] == []
        httpx.post(f"{cluster.api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
        assert httpx.get(f"{other}/list_urls").json()["data"]["urls"] == [registered]


@contextlib.contextmanager
def own_queue(cluster: Cluster, folder: Path, queue: str, **worker_settings: object) -> Iterator[str]:
    """An API replica and a worker serving a queue of their own, the worker with `worker_settings`
    (as ANONYMIZER_API_<NAME>), so that what one worker's settings change shows on its jobs alone."""
    env = {**cluster.env, "ANONYMIZER_API_CELERY_QUEUE": queue}
    worker_env = {**env, **{f"ANONYMIZER_API_{name.upper()}": str(value) for name, value in worker_settings.items()}}
    with (
        celery_worker(f"{queue}@test", cluster.broker, cluster.data, folder / f"{queue}.log", worker_env, queues=queue),
        running(["serve-api", "--data-dir", str(cluster.data)], "/health", folder / f"api-{queue}.log", env=env) as api,
    ):
        yield api


def run_job(api: str, path: Path) -> dict:
    return wait_job(api, submit(api, path, FAST).json()["data"]["id"])


def test_a_worker_enforces_its_allow_list_on_a_server_the_shared_registry_names(cluster, tmp_path, detection_url):
    """The API replica registered the detection server (127.0.0.1) in the shared registry; a worker
    whose ANONYMIZER_API_REGISTRY_ALLOW refuses it sends it nothing, and the job fails closed."""
    source = make_video(tmp_path / "allow.mp4", frames=12)
    with own_queue(cluster, tmp_path, "restricted", registry_allow="10.9.8.0/24") as api:
        job = run_job(api, source.path)
    assert job["state"] == "failed", job
    assert "ANONYMIZER_API_REGISTRY_ALLOW" in job["error"] or "unavailable" in job["error"], job["error"]
    assert not (cluster.data / "anonymized_videos" / job["name"]).exists() and cluster.leftovers() == []


def inject(cluster: Cluster, job_id: str, record: dict) -> None:
    """A record written straight into Redis, as anyone who reaches it could."""
    import redis

    client = redis.Redis.from_url(cluster.broker)
    try:
        client.set(f"anonymizer:job:{job_id}", json.dumps(record))
        client.zadd("anonymizer:jobs", {job_id: time.time()})
    finally:
        client.close()


def test_a_job_record_written_into_redis_cannot_reach_files_outside_the_data_folder(cluster, tmp_path):
    outside = tmp_path / "precious.mp4"
    outside.write_bytes(b"keep me")
    escape = "../" * 12 + str(outside).lstrip("/")
    job_id = "badbadbad000"
    record = {"id": job_id, "owner": None, "name": "x.mp4", "input": escape, "output": escape, "request": {}}
    inject(cluster, job_id, record)
    app = create_celery(ApiSettings(broker_url=cluster.broker))
    try:
        app.send_task("anonymizer.start", (job_id,), queue=ApiSettings().celery_queue)
        for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/result"):
            assert httpx.get(f"{cluster.api}{path}").status_code == 404
        assert httpx.delete(f"{cluster.api}/jobs/{job_id}").status_code == 404
        time.sleep(3)  # the workers had time to take the task
    finally:
        app.close()
    assert outside.read_bytes() == b"keep me"
    assert job_id not in {job["id"] for job in httpx.get(f"{cluster.api}/jobs").json()["data"]}


def test_a_worker_with_a_lower_pixel_limit_refuses_a_video_the_api_accepted(cluster, tmp_path):
    source = make_video(tmp_path / "big.mp4", frames=6, size=(640, 360))
    with own_queue(cluster, tmp_path, "small", max_video_pixels=320 * 240) as api:
        job = run_job(api, source.path)
    assert job["state"] == "failed" and "640x360" in job["error"], job
    assert cluster.leftovers() == []


def test_one_key_has_at_most_its_quota_of_jobs_on_the_workers(cluster, tmp_path):
    env = {**cluster.env, "ANONYMIZER_API_JOBS_PER_KEY": "2", "ANONYMIZER_API_CELERY_QUEUE": "nobody-serves-this"}
    source = make_video(tmp_path / "q.mp4", frames=6)
    with running(["serve-api", "--data-dir", str(cluster.data)], "/health", tmp_path / "api-q.log", env=env) as api:
        answers = [submit(api, source.path, FAST) for _ in range(3)]  # queued: no worker serves that queue
        for answer in answers[:2]:
            assert answer.status_code == 202, answer.text
            httpx.delete(f"{api}/jobs/{answer.json()['data']['id']}", timeout=60)
    refused = answers[2]
    assert refused.status_code == 429 and "ANONYMIZER_API_JOBS_PER_KEY" in refused.json()["error"], refused.text
    assert cluster.leftovers() == []


def test_a_worker_serves_the_metrics_of_its_pool(cluster, tmp_path):
    """The worker's router counts its inference calls, as the API's does, and the worker serves
    them summed over its pool's processes."""
    port = free_port()
    source = make_video(tmp_path / "metered.mp4", frames=12)
    with own_queue(cluster, tmp_path, "metered", worker_metrics_port=port) as api:
        job = run_job(api, source.path)
        assert job["state"] == "done", job
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    calls = sample(scraped, "anonymizer_inference_duration_seconds_count", model="centerface", outcome="ok")
    assert calls >= 1, scraped[:2000]


def test_a_worker_process_discovers_a_server_once_not_at_every_step(cluster, tmp_path, detection_url):
    """A worker process keeps the registry and router its first step opened: the later steps of that
    job (its segments, the join) and the steps of the next job send frames without discovering the
    server again (discovery always begins with GET v2/health/ready); a server registered meanwhile
    is discovered by the next step, once. A Redis database of their own keeps this API and worker
    apart from the cluster's registry, jobs and queue."""
    broker = cluster.broker.rsplit("/", 1)[0] + "/1"
    env = {**cluster.env, "ANONYMIZER_BROKER_URL": broker}
    data = tmp_path / "data"
    source = make_video(tmp_path / "three.mp4", frames=45, fps=15, keyframe_interval=15)
    ready = "GET /v2/health/ready"
    with (
        CountingProxy(detection_url) as server,
        CountingProxy(detection_url) as added,
        celery_worker("kept@test", broker, data, tmp_path / "kept.log", env),
        running(["serve-api", "--data-dir", str(data)], "/health", tmp_path / "api-kept.log", env=env) as api,
    ):
        httpx.post(f"{api}/set_url", data={"url": server.url}, timeout=60).raise_for_status()
        first = run_job(api, source.path)
        assert first["state"] == "done", first
        discoveries, inferences = server.count(ready), server.count(INFER)
        httpx.post(f"{api}/set_url", data={"url": added.url}, timeout=60).raise_for_status()
        assert added.count(ready) == 1  # the API's own discovery, at registration
        second = run_job(api, source.path)
        assert second["state"] == "done", second
    assert segments_of(broker, second["id"]) == 3  # five steps: start, three segments, join
    assert server.count(INFER) + added.count(INFER) > inferences  # the second job's frames went out
    assert server.count(ready) == discoveries, server.requests
    assert added.count(ready) == 2, added.requests  # and the worker's, before its first step that needed it
