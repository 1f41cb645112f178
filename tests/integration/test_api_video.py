"""POST /anonymize_video and /jobs through the real API and inference servers, on generated
videos with a real face moving across them and a sine-tone audio track."""

import asyncio
import itertools
import json
import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest

from anonymizer_tools.processes import anonymizer_command, wait_until_ready
from tests.support.api import face_entry, wait_job
from tests.support.images import region_change, wheel_photo
from tests.support.servers import FAST_REDISCOVERY, free_port, running
from tests.support.videos import make_video, read_frames

CONFIG = json.dumps({"sensitive_info": [face_entry()]})
# One detection pass per frame: for the tests of job handling, where what is found matters less than time.
FAST = json.dumps({"sensitive_info": [face_entry(model_parameters={"scales": "1"})]})


def submit(api: str, path: Path, config: str = CONFIG, endpoint: str = "/jobs", **form) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{api}{endpoint}",
            files={"video": (path.name, handle, "video/mp4"), "configuration": ("c.json", config)},
            data=form,
            timeout=300,
        )


def result(api: str, job: dict, tmp_path: Path) -> Path:
    response = httpx.get(f"{api}{job['result_url']}", timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(response.content)
    return out


def assert_faces_hidden(source, frames: list[np.ndarray]) -> None:
    for index, (before, after) in enumerate(zip(source.frames, frames, strict=True)):
        assert region_change(before, after, source.faces[index]) > 25, f"face visible in frame {index}"


def test_video_keeps_audio_frames_timing_and_hides_every_face(api_url, tmp_path):
    source = make_video(tmp_path / "walk.mp4", frames=45, fps=15)
    response = submit(api_url, source.path)
    assert response.status_code == 202
    job_id = response.json()["data"]["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    job = wait_job(api_url, job_id)
    assert job["state"] == "done" and job["frames_done"] == 45 and job["frames_total"] == 45
    assert re.fullmatch(r"Anonymized_walk_[0-9_]+\.mp4", job["output"])  # the file's name, no server path
    out = result(api_url, job, tmp_path)
    with av.open(str(out)) as container, av.open(str(source.path)) as original:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert len(container.streams.audio) == 1
        frame_s = 1 / 15
        assert abs(container.duration - original.duration) / 1e6 <= frame_s
    frames, pts, time_base = read_frames(out)
    assert len(frames) == 45
    assert [p * time_base for p in pts] == [p * source.time_base for p in source.pts]
    assert_faces_hidden(source, frames)
    decoded, _, _ = read_frames(source.path)
    below = (0, 230, 480, 270)  # background below the face's path and its enlarged box
    # x264 at its default CRF 23 alone changes this colour-noise texture by about 4; blurring it, by over 20
    assert all(region_change(before, after, below) < 6 for before, after in zip(decoded, frames, strict=True))


def test_variable_frame_rate_keeps_its_timing(api_url, tmp_path):
    source = make_video(tmp_path / "vfr.mp4", frames=30, variable_rate=True, audio=False)
    job = wait_job(api_url, submit(api_url, source.path).json()["data"]["id"])
    frames, pts, time_base = read_frames(result(api_url, job, tmp_path))
    assert len(frames) == 30
    got = [float(p * time_base) for p in pts]
    want = [float(p * source.time_base) for p in source.pts]
    assert np.allclose(got, want, atol=1e-3)
    assert len({round(b - a, 3) for a, b in itertools.pairwise(want)}) > 1  # it really is variable
    assert_faces_hidden(source, frames)


def test_without_audio_when_asked(api_url, tmp_path):
    source = make_video(tmp_path / "quiet.mp4", frames=15)
    job = wait_job(api_url, submit(api_url, source.path, keep_audio="false").json()["data"]["id"])
    with av.open(str(result(api_url, job, tmp_path))) as container:
        assert not container.streams.audio


def test_rotated_video_is_written_upright_and_hidden(api_url, tmp_path):
    source = make_video(tmp_path / "phone.mp4", frames=15, rotation=90, audio=False)
    job = wait_job(api_url, submit(api_url, source.path).json()["data"]["id"])
    frames, _, _ = read_frames(result(api_url, job, tmp_path))
    height, width = source.frames[0].shape[:2]
    assert frames[0].shape[:2] == (width, height)  # turned as the display matrix says
    with av.open(str(source.path)) as container:
        turns = round(next(container.decode(video=0)).rotation / 90)
    upright = [np.ascontiguousarray(np.rot90(frame, k=turns)) for frame in source.frames]
    for index, frame in enumerate(frames):
        x1, y1, x2, y2 = source.faces[index]
        face_region = np.zeros(source.frames[0].shape[:2], bool)
        face_region[y1:y2, x1:x2] = True
        rows, cols = np.nonzero(np.rot90(face_region, k=turns))
        box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert region_change(upright[index], frame, box) > 25


def test_odd_frame_size_is_padded_not_distorted(api_url, tmp_path):
    source = make_video(tmp_path / "odd.mp4", frames=10, size=(481, 271), audio=False)
    job = wait_job(api_url, submit(api_url, source.path).json()["data"]["id"])
    frames, _, _ = read_frames(result(api_url, job, tmp_path))
    assert frames[0].shape == (272, 482, 3)
    decoded, _, _ = read_frames(source.path)
    below = (0, 230, 481, 271)
    assert region_change(decoded[0], frames[0][:271, :481], below) < 10  # 4:4:4 in, 4:2:0 out; a rescale is > 30
    assert_faces_hidden(source, [frame[:271, :481] for frame in frames])


def test_anonymize_video_answers_as_bmw_once_the_file_is_written(single_worker_api, detection_url, tmp_path):
    api, videos = single_worker_api
    httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
    source = make_video(tmp_path / "street walk.v2.mp4", frames=10)
    response = submit(api, source.path, endpoint="/anonymize_video/")
    assert response.status_code == 200 and response.json() == "Done"
    (written,) = videos.iterdir()
    assert re.fullmatch(r"Anonymized_street_walk_\d\d_\d\d_\d\d_\d\d_\d\d_\d\d\.mp4", written.name)
    frames, _, _ = read_frames(written)
    assert_faces_hidden(source, frames)
    later = submit(api, source.path, endpoint="/anonymize_video", wait="false")
    assert later.status_code == 202 and later.headers["location"] == later.json()["data"]["status_url"]


def test_jobs_answer_202_and_serve_the_result_with_range_requests(api_url, tmp_path):
    source = make_video(tmp_path / "sync.mp4", frames=10)
    response = submit(api_url, source.path)
    assert response.status_code == 202 and response.headers["location"] == f"/jobs/{response.json()['data']['id']}"
    job = wait_job(api_url, response.json()["data"]["id"])
    assert job["state"] == "done" and "/" not in job["output"]
    partial = httpx.get(f"{api_url}{job['result_url']}", headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and len(partial.content) == 100
    assert any(j["id"] == job["id"] for j in httpx.get(f"{api_url}/jobs").json()["data"])


@pytest.fixture
def single_worker_api(tmp_path, detection_url):
    """An API of its own (one worker, no queue) so long jobs do not hold up the other tests."""
    env = {**FAST_REDISCOVERY, "ANONYMIZER_API_VIDEO_QUEUE": "0"}
    with running(["serve-api", "--data-dir", str(tmp_path / "data")], "/health", tmp_path / "api.log", env=env) as api:
        yield api, tmp_path / "data" / "anonymized_videos"


def test_cancel_removes_partial_output_and_full_queue_answers_429(single_worker_api, detection_url, tmp_path):
    api, videos = single_worker_api
    httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
    source = make_video(tmp_path / "long.mp4", frames=400, fps=25, size=(640, 360))
    job_id = submit(api, source.path).json()["data"]["id"]
    wait_job(api, job_id, until=lambda job: job["frames_done"] > 0)
    busy = submit(api, source.path)
    assert busy.status_code == 429 and int(busy.headers["retry-after"]) > 0
    cancelled = httpx.delete(f"{api}/jobs/{job_id}", timeout=60).json()["data"]
    assert cancelled["state"] == "cancelled"
    assert list(videos.glob("*")) == [] and list(uploads(videos).iterdir()) == []
    assert httpx.get(f"{api}/jobs/{job_id}/result").status_code == 409


def uploads(videos: Path) -> Path:
    return videos.parent / ".uploads"


def test_deleting_a_finished_job_removes_its_file_and_a_vanished_result_is_410(
    single_worker_api, detection_url, tmp_path
):
    api, videos = single_worker_api
    httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
    source = make_video(tmp_path / "short.mp4", frames=5, audio=False)
    first, second = (wait_job(api, submit(api, source.path, FAST).json()["data"]["id"]) for _ in range(2))
    deleted = httpx.delete(f"{api}/jobs/{first['id']}", timeout=60)
    assert deleted.status_code == 200 and deleted.json()["data"]["state"] == "deleted"
    assert [p.name for p in videos.iterdir()] == [second["output"]]
    gone = httpx.get(f"{api}/jobs/{first['id']}/result")
    assert gone.status_code == 410 and "deleted" in gone.json()["error"]
    (videos / second["output"]).unlink()  # behind the service's back
    vanished = httpx.get(f"{api}/jobs/{second['id']}/result")
    assert vanished.status_code == 410 and "removed outside the service" in vanished.json()["error"]


def test_seventeen_concurrent_deletes_of_a_running_and_sixteen_queued_jobs(detection_url, tmp_path):
    """Regression: this crashed the API in libavformat, leaving unredacted uploads behind."""
    data = tmp_path / "data"
    with running(["serve-api", "--data-dir", str(data)], "/health", tmp_path / "api.log", env=FAST_REDISCOVERY) as api:
        httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
        source = make_video(tmp_path / "long.mp4", frames=300, fps=25, size=(640, 360))
        ids = [submit(api, source.path, FAST).json()["data"]["id"] for _ in range(17)]
        wait_job(api, ids[0], until=lambda job: job["frames_done"] > 0)
        assert httpx.get(f"{api}/jobs/{ids[1]}").json()["data"]["state"] == "queued"

        async def delete_all() -> list[int]:
            async with httpx.AsyncClient(base_url=api, timeout=120) as client:
                answers = await asyncio.gather(*(client.delete(f"/jobs/{job_id}") for job_id in ids + ids[:3]))
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(delete_all())
        assert set(statuses) <= {200, 404, 409}, statuses
        assert httpx.get(f"{api}/health").status_code == 200  # still alive
        states = {job["id"]: job["state"] for job in httpx.get(f"{api}/jobs").json()["data"]}
        assert {states[job_id] for job_id in ids} == {"cancelled"}
        assert list(uploads(data / "anonymized_videos").iterdir()) == []
        assert list((data / "anonymized_videos").iterdir()) == []


def test_after_kill_9_of_the_api_a_restart_fails_the_job_and_leaves_no_file(detection_url, tmp_path):
    data = tmp_path / "data"
    port = free_port()
    command = anonymizer_command(["serve-api", "--data-dir", str(data), "--port", str(port)])
    api = f"http://127.0.0.1:{port}"
    with (tmp_path / "api.log").open("w") as log:
        env = {**os.environ, **FAST_REDISCOVERY}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_ready(f"{api}/health", process)
        httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
        done = wait_job(api, submit(api, make_video(tmp_path / "short.mp4", frames=5).path, FAST).json()["data"]["id"])
        source = make_video(tmp_path / "long.mp4", frames=300, fps=25, size=(640, 360))
        job_id = submit(api, source.path, FAST).json()["data"]["id"]
        wait_job(api, job_id, until=lambda job: job["frames_done"] > 0)
        assert list(uploads(data / "anonymized_videos").iterdir()) and list((data / "anonymized_videos").iterdir())
    finally:
        process.kill()  # SIGKILL: nothing of the API's own clean-up runs
        process.wait()
    with running(["serve-api", "--data-dir", str(data)], "/health", tmp_path / "api2.log", env=FAST_REDISCOVERY) as api:
        job = httpx.get(f"{api}/jobs/{job_id}").json()["data"]
        assert job["state"] == "failed" and "restarted" in job["error"] and "submit it again" in job["error"]
        listed = {j["id"]: j["state"] for j in httpx.get(f"{api}/jobs").json()["data"]}
        assert listed == {done["id"]: "done", job_id: "failed"}
        assert httpx.get(f"{api}{done['result_url']}").status_code == 200  # finished work survives
    assert list(uploads(data / "anonymized_videos").iterdir()) == []
    assert [p.name for p in (data / "anonymized_videos").iterdir()] == [done["output"]]


def test_fail_closed_when_inference_stops_mid_video(single_worker_api, tmp_path):
    api, videos = single_worker_api
    source = make_video(tmp_path / "long.mp4", frames=400, fps=25, size=(640, 360))
    with running(["serve-detection"], "/v2/health/ready", tmp_path / "det.log") as doomed:
        httpx.post(f"{api}/set_url", data={"url": doomed}, timeout=60).raise_for_status()
        job_id = submit(api, source.path).json()["data"]["id"]
        wait_job(api, job_id, until=lambda job: job["frames_done"] > 0)
    job = wait_job(api, job_id)
    assert job["state"] == "failed" and doomed in job["error"] and "centerface" in job["error"]
    assert list(videos.glob("*")) == [] and list(uploads(videos).iterdir()) == []


def test_tracking_hides_the_face_where_the_detector_misses_it(api_url, tmp_path):
    """Frames where the detector cannot see the face are still hidden through the hold."""
    source = make_video(tmp_path / "flicker.mp4", frames=30, audio=False)
    faded = make_faded_copy(source, tmp_path / "faded.mp4", frames_to_fade={10, 11, 20})
    # solid red: a faded face is nearly flat, so a blur of it would hardly show
    red = json.dumps({"sensitive_info": [face_entry(anonymization_technique="solid", color="#ff0000")]})
    tracked = wait_job(api_url, submit(api_url, faded.path, config=red).json()["data"]["id"])
    untracked = wait_job(api_url, submit(api_url, faded.path, config=red, tracking="false").json()["data"]["id"])
    with_tracking, _, _ = read_frames(result(api_url, tracked, tmp_path))
    without, _, _ = read_frames(result(api_url, untracked, tmp_path))
    exposed = [i for i in (10, 11, 20) if region_change(faded.frames[i], without[i], faded.faces[i]) < 30]
    assert exposed, "the faded frames should defeat the detector on its own"
    for index in (10, 11, 20):
        assert region_change(faded.frames[index], with_tracking[index], faded.faces[index]) > 60


def make_faded_copy(source, path: Path, frames_to_fade: set[int]):
    """The same video with the face erased (flattened to its mean colour) in some frames."""
    from tests.support.videos import TestVideo

    pictures = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15)
        height, width = source.frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for index, picture in enumerate(source.frames):
            picture = picture.copy()
            if index in frames_to_fade:
                x1, y1, x2, y2 = source.faces[index]
                patch = picture[y1:y2, x1:x2].astype(np.float32)
                picture[y1:y2, x1:x2] = patch.mean(axis=(0, 1)).astype(np.uint8)
            pictures.append(picture)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return TestVideo(path, pictures, source.faces, list(range(len(pictures))), Fraction(1, 15))


def test_detection_on_every_third_frame_still_hides_every_face(api_url, tmp_path):
    source = make_video(tmp_path / "sparse.mp4", frames=30, audio=False)
    job = wait_job(api_url, submit(api_url, source.path, detection_interval="3").json()["data"]["id"])
    frames, _, _ = read_frames(result(api_url, job, tmp_path))
    assert_faces_hidden(source, frames)
    refused = submit(api_url, source.path, detection_interval="3", tracking="false")
    assert refused.status_code == 400 and "needs tracking" in refused.json()["error"]


def test_detection_at_half_size_hides_every_face_at_full_size(api_url, tmp_path):
    source = make_video(tmp_path / "small.mp4", frames=20, audio=False)  # 480x270, detected at 240x135
    job = wait_job(api_url, submit(api_url, source.path, detection_size="240x136").json()["data"]["id"])
    assert job["state"] == "done", job
    frames, _, _ = read_frames(result(api_url, job, tmp_path))
    assert frames[0].shape == (270, 480, 3)
    assert_faces_hidden(source, frames)
    refused = submit(api_url, source.path, detection_size="half")
    assert refused.status_code == 400 and "WIDTHxHEIGHT" in refused.json()["error"]


def test_audio_mp4_cannot_carry_is_reencoded_to_aac(api_url, tmp_path):
    source = make_video(tmp_path / "camera.mkv", frames=30, audio_codec="pcm_s16le")
    with av.open(str(source.path)) as original:
        assert original.streams.audio[0].codec_context.name == "pcm_s16le"
        audio_seconds = sum(frame.samples for frame in original.decode(audio=0)) / 48000
    job = wait_job(api_url, submit(api_url, source.path).json()["data"]["id"])
    assert job["state"] == "done", job
    with av.open(str(result(api_url, job, tmp_path))) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        decoded = sum(frame.samples for frame in container.decode(audio))
    assert abs(decoded / 48000 - audio_seconds) < 0.1


def test_key_frames_hide_the_face_in_every_frame_between_them(api_url, tmp_path):
    """720p at 30 fps with a small face: whole frames every 4th frame, windows between (the
    windows are cut only where the frame is large against the face, hence this size)."""
    source = make_video(tmp_path / "wide.mp4", frames=30, fps=30, size=(1280, 720), face_height=70, audio=False)
    keyed = wait_job(api_url, submit(api_url, source.path).json()["data"]["id"])
    whole = wait_job(api_url, submit(api_url, source.path, key_frame_seconds="0").json()["data"]["id"])
    assert keyed["state"] == whole["state"] == "done"
    frames, _, _ = read_frames(result(api_url, keyed, tmp_path))
    assert_faces_hidden(source, frames)
    every, _, _ = read_frames(result(api_url, whole, tmp_path))
    assert_faces_hidden(source, every)


def test_a_walking_person_is_hidden_in_every_frame(api_url, tmp_path):
    """Persons go through key frames and tracking as faces do: a pedestrian of the wheel's bus.jpg
    (the one on the left, with the street around) walks across the frame."""
    crop = wheel_photo("bus.jpg")[370:920, 30:245]
    walker = cv2.resize(crop, (round(crop.shape[1] * 200 / crop.shape[0]), 200), interpolation=cv2.INTER_AREA)
    source = make_video(tmp_path / "person.mp4", frames=30, fps=15, size=(640, 360), audio=False, patch=walker)
    entry = {"class_name": "person", "inference_type": "detection", "anonymization_technique": "blackening",
             "anonymization_degree": 1}  # fmt: skip
    response = submit(api_url, source.path, json.dumps({"sensitive_info": [entry]}))
    assert response.status_code == 202, response.text
    job = wait_job(api_url, response.json()["data"]["id"])
    assert job["state"] == "done", job
    frames, _, _ = read_frames(result(api_url, job, tmp_path))
    decoded, _, _ = read_frames(source.path)
    for index, (before, after) in enumerate(zip(decoded, frames, strict=True)):
        x1, y1, x2, y2 = source.faces[index]  # the walker's place in that frame
        person = (x1 + 15, y1 + 20, x2 - 15, y2 - 10)  # the person inside the crop's street margin
        assert region_change(before, after, person) > 25, f"person visible in frame {index}"
        assert region_change(before, after, (0, 0, 640, 30)) < 6  # the background above, far from the walker
