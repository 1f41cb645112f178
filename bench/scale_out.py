"""Video throughput of the Celery mode with 1, 2 and 4 workers, and what an archive needs.

    .venv/bin/python -m bench.scale_out [--media DIR] [--clips 4] [--frames 100]
                                        [--workers 1,2,4] [--segment-seconds 5]

The archive is `--clips` copies of the first `--frames` frames of the PETS 2009 pedestrian video
(480x360, 10 fps), re-encoded with a keyframe every second so that it can be cut into segments.
Everything runs on this machine on loopback: a redis-server, our detection server, the API with
ANONYMIZER_BROKER_URL, and 1, 2, then 4 `anonymizer worker` processes (one process each). For
each worker count the whole archive is submitted at once; fps is its frames over the time from
the first upload to the last job done.

Then, in-process on the same clip, the cost per frame of each stage a worker runs: decoding,
inference (through the detection server, as a worker sends it), rendering (hiding the regions)
and encoding. From those, the table of workers and inference servers that an archive of N hours
a day needs, with its assumptions printed beside it.
"""

import argparse
import asyncio
import contextlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx

from anonymization_api.composition import open_inference
from anonymization_api.configuration import parse_configuration, plan
from anonymization_api.media.video import EncoderSettings, VideoReader, VideoWriter, probe
from anonymization_api.pipelines.image import entry_detections, localise
from anonymization_api.pipelines.video import FrameRecord, render
from anonymization_api.settings import ApiSettings
from anonymizer_tools.processes import celery_worker, redis_server, running
from inference_common.models import PROJECT_ROOT

CONFIG = {
    "sensitive_info": [
        {
            "model_name": "centerface",
            "class_name": "face",
            "inference_type": "detection",
            "anonymization_technique": "blurring",
            "anonymization_degree": 1,
        }
    ]
}
HOURS_PER_DAY = (8, 24, 100, 1000)
UTILISATION = 0.7  # of each machine's time a sizing counts on: queues drain unevenly, machines restart


def build_clip(media: Path, frames: int, target: Path) -> tuple[int, float]:
    """H.264 with a keyframe every second; returns its frame count and frame rate."""
    with av.open(str(media / "vtest_pets2009_480x360_h264.avi")) as source, av.open(str(target), "w") as out:
        rate = source.streams.video[0].average_rate
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": str(round(rate)), "sc_threshold": "0"}
        written = 0
        for frame in source.decode(video=0):
            if written == frames:
                break
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            picture.pts = written
            out.mux(stream.encode(picture))
            written += 1
        out.mux(stream.encode(None))
    return written, float(rate)


def archive_fps(api: str, clips: list[Path], frames: int) -> float:
    start = time.monotonic()
    ids = []
    with httpx.Client(base_url=api, timeout=300) as client:
        for clip in clips:
            with clip.open("rb") as handle:
                answer = client.post(
                    "/jobs", files={"video": (clip.name, handle), "configuration": ("c.json", json.dumps(CONFIG))}
                )
            answer.raise_for_status()
            ids.append(answer.json()["data"]["id"])
        pending = set(ids)
        while pending:
            time.sleep(0.2)
            for job_id in list(pending):
                job = client.get(f"/jobs/{job_id}").json()["data"]
                if job["state"] not in ("queued", "running"):
                    if job["state"] != "done":
                        raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
                    pending.discard(job_id)
    return frames * len(clips) / (time.monotonic() - start)


async def stage_costs(clip: Path, detection: str, folder: Path, batch: int = 8) -> dict[str, float]:
    """Seconds per frame of each stage, run one after the other on the whole clip."""
    info = probe(clip)
    reader = VideoReader(clip, keep_audio=False)
    started, batches = time.perf_counter(), []
    while (decoded := reader.next_batch(batch)) is not None:
        batches.append(decoded)
    decode = time.perf_counter() - started
    reader.close()
    frames = sum(len(b.frames) for b in batches)

    settings = ApiSettings(data_dir=folder)
    async with open_inference(settings) as inference_parts:  # the registry and router a worker builds
        await inference_parts.registry.add(detection)
        the_plan = plan(parse_configuration(json.dumps(CONFIG)), inference_parts.registry)
        entry = the_plan.entries[0]
        records = []
        started = time.perf_counter()
        for decoded in batches:
            results = await localise(the_plan, decoded.frames, inference_parts.router)
            for position, (image, pts) in enumerate(zip(decoded.frames, decoded.pts, strict=True)):
                record = FrameRecord(len(records), pts, image)
                record.boxes[entry.index] = [entry_detections(entry, results[entry.call_key][position])]
                records.append(record)
        inference = time.perf_counter() - started

    started = time.perf_counter()
    rendered = [(render(record, the_plan), record.pts) for record in records]
    render_s = time.perf_counter() - started
    encoder = EncoderSettings(settings.video_preset, settings.video_crf, settings.encoder_threads)
    reader = VideoReader(clip, keep_audio=False)
    writer = VideoWriter(folder / "encoded.mp4", reader, info, encoder)
    started = time.perf_counter()
    writer.write(rendered, [])
    writer.finish()
    encode = time.perf_counter() - started
    reader.close()
    seconds = {"decode": decode, "inference": inference, "render": render_s, "encode": encode}
    return {stage: value / frames for stage, value in seconds.items()}


def sizing(costs: dict[str, float], fps: float) -> list[str]:
    worker_s = costs["decode"] + costs["render"] + costs["encode"]
    lines = [
        "| archive, hours of video a day | frames a day | workers (1 CPU core each) "
        "| inference servers (as measured here) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for hours in HOURS_PER_DAY:
        frames = hours * 3600 * fps
        workers = math.ceil(frames * worker_s / (86400 * UTILISATION))
        servers = math.ceil(frames * costs["inference"] / (86400 * UTILISATION))
        lines.append(f"| {hours} | {frames:,.0f} | {workers} | {servers} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "media")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = folder / "clip.mp4"
        frames, rate = build_clip(args.media, args.frames, clip)
        clips = [clip] * args.clips
        data = folder / "data"
        with (
            redis_server(folder) as broker,
            running(["serve-detection"], "/v2/health/ready", folder / "detection.log") as detection,
        ):
            env = {"ANONYMIZER_BROKER_URL": broker, "ANONYMIZER_API_VIDEO_SEGMENT_SECONDS": str(args.segment_seconds)}
            with running(["serve-api", "--data-dir", str(data)], "/health", folder / "api.log", env=env) as api:
                httpx.post(f"{api}/set_url", data={"url": detection}, timeout=60).raise_for_status()
                throughput = {}
                for count in (int(n) for n in args.workers.split(",")):
                    with workers(count, broker, data, folder, env):
                        throughput[count] = archive_fps(api, clips, frames)
                    print(f"{count} worker(s): {throughput[count]:.2f} fps over the archive", flush=True)
            costs = asyncio.run(stage_costs(clip, detection, folder))
    size = f"{args.clips} x {frames} frames of 480x360 at {rate:g} fps"
    print(f"\narchive: {size}, segments of {args.segment_seconds:g} s")
    print("| workers | archive fps | over 1 worker |\n| ---: | ---: | ---: |")
    first = next(iter(throughput.values()))
    for count, fps in throughput.items():
        print(f"| {count} | {fps:.2f} | {fps / first:.2f}x |")
    print("\nper frame, in-process on one clip (ms): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in costs.items()))
    print(f"\nsizing for 480x360 at {rate:g} fps, the default face configuration:")
    print("\n".join(sizing(costs, rate)))
    print(
        "assumptions: a worker is one process on one core and spends decode + render + encode per frame; "
        "an inference server spends the inference time measured here per frame (this machine's whole CPU, "
        f"one frame batch of 8 at a time); machines busy {UTILISATION:.0%} of the day; other resolutions "
        "and configurations cost other amounts per frame (not measured here)."
    )


@contextlib.contextmanager
def workers(count: int, broker: str, data: Path, folder: Path, env: dict[str, str]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for index in range(count):
            log = folder / f"w{count}-{index}.log"
            stack.enter_context(celery_worker(f"bench{index}@{count}", broker, data, log, env))
        yield


if __name__ == "__main__":
    main()
