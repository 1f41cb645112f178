"""`anonymizer run`: anonymise images, videos and folders through a running API.

Folders are walked recursively and their structure is kept under the output folder; files that
are neither images nor videos are reported and skipped. Each result is written under a
temporary name and renamed when complete, so a failure never leaves a partial file behind.
"""

import argparse
import base64
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from anonymization_api.schemas import ImageAudit, JobDescription
from anonymization_api.techniques import TECHNIQUES
from anonymizer_shared.files import atomic_output, atomic_write

logger = logging.getLogger("anonymizer.run")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
# Formats the API writes as they came; other images come back as PNG.
KEPT_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class WorkItem:
    source: Path
    target: Path
    is_video: bool


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def add_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="anonymise images, videos and folders through a running API")
    run.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image or video files, or folders")
    run.add_argument("-o", "--output", type=Path, required=True, help="folder for the anonymised files")
    run.add_argument("--config", type=Path, help="a user configuration JSON (BMW's format)")
    run.add_argument("--classes", help="instead of --config: classes to hide, e.g. face,license_plate")
    run.add_argument("--technique", choices=sorted(TECHNIQUES), default="blurring", help="with --classes")
    run.add_argument("--degree", type=float, default=1.0, help="with --classes: 0..1 (default 1, irreversible)")
    run.add_argument("--api", default="http://127.0.0.1:4343", help="the API's address")
    run.add_argument("--report", type=Path, help="write the detections per file to this JSON file")
    run.add_argument("--no-audio", action="store_true", help="drop the audio of videos")
    run.add_argument(
        "--detection-size",
        metavar="WxH",
        help="detect on a copy shrunk to fit, e.g. 960x544 (faster, misses tiny faces)",
    )
    run.add_argument(
        "--detection-interval", type=int, metavar="N", help="videos: detect on every N-th frame, tracking between"
    )
    run.set_defaults(handler=run_command)


def configuration(args: argparse.Namespace) -> str:
    if args.config is not None:
        return args.config.read_text()
    if not 0.0 <= args.degree <= 1.0:
        raise ValueError(f"--degree {args.degree} must lie in 0..1")
    classes = [name.strip() for name in (args.classes or "face").split(",") if name.strip()]
    entries = [
        {
            "class_name": name,
            "inference_type": "detection",
            "anonymization_technique": args.technique,
            "anonymization_degree": args.degree,
        }
        for name in classes
    ]
    return json.dumps({"sensitive_info": entries})


def collect(inputs: list[Path], output: Path, summary: Summary) -> list[WorkItem]:
    """Every media file under the inputs, with where its result goes."""
    items = []
    for given in inputs:
        if given.is_dir():
            base = output / given.resolve().name if len(inputs) > 1 else output
            files = sorted(path for path in given.rglob("*") if path.is_file())
            pairs = [(path, base / path.relative_to(given)) for path in files]
        elif given.is_file():
            pairs = [(given, output / given.name)]
        else:
            summary.failed[str(given)] = "no such file or folder"
            continue
        for source, target in pairs:
            suffix = source.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                items.append(WorkItem(source, target.with_suffix(".mp4"), True))
            elif suffix in IMAGE_SUFFIXES:
                kept = target if suffix in KEPT_IMAGE_SUFFIXES else target.with_suffix(".png")
                items.append(WorkItem(source, kept, False))
            else:
                logger.warning("skipping %s: not an image or video", source)
                summary.skipped.append(str(source))
    return items


def _error_of(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json().get('error')}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"


def request_options(args: argparse.Namespace, is_video: bool) -> dict[str, str]:
    """The form fields the command line asks for, beside the configuration."""
    options = {"detection_size": args.detection_size}
    if is_video:
        options |= {"keep_audio": str(not args.no_audio).lower(), "detection_interval": args.detection_interval}
    else:
        options["detections"] = "include"
    return {name: str(value) for name, value in options.items() if value is not None}


def _upload(client: httpx.Client, item: WorkItem, config: str, options: dict[str, str]) -> dict[str, Any]:
    """Post the file with its configuration to the endpoint for its kind; the answer's data."""
    endpoint, field, expected = ("/jobs", "video", 202) if item.is_video else ("/anonymize", "image", 200)
    with item.source.open("rb") as handle:
        response = client.post(
            endpoint,
            files={field: (item.source.name, handle), "configuration": ("configuration.json", config)},
            data=options,
        )
    if response.status_code != expected:
        raise RuntimeError(_error_of(response))
    return response.json()["data"]


def anonymise_image(client: httpx.Client, item: WorkItem, config: str, options: dict[str, str]) -> dict[str, Any]:
    audit = ImageAudit.model_validate(_upload(client, item, config, options))
    atomic_write(item.target, base64.b64decode(audit.image or ""))
    return audit.model_dump(include={"width", "height", "detections"}, exclude_none=True)


def anonymise_video(client: httpx.Client, item: WorkItem, config: str, options: dict[str, str], position: int) -> dict:
    job = JobDescription.model_validate(_upload(client, item, config, options))
    with tqdm(desc=f"  {item.source.name}", unit="frame", position=position, leave=False) as bar:
        while job.state in ("queued", "running"):
            time.sleep(0.5)
            job = JobDescription.model_validate(client.get(job.status_url).json()["data"])
            bar.total = job.frames_total or None
            bar.n = job.frames_done
            bar.refresh()
    if job.state != "done" or job.result_url is None:
        raise RuntimeError(f"video job {job.state}: {job.error}")
    with atomic_output(item.target) as partial, client.stream("GET", job.result_url) as download:
        if download.status_code != 200:
            raise RuntimeError(_error_of(download))
        with partial.open("wb") as out:
            for chunk in download.iter_bytes(1 << 20):
                out.write(chunk)
    return {"frames": job.frames_done, "fps": job.fps, "detections": [d.model_dump() for d in job.detections]}


def run_command(args: argparse.Namespace) -> int:
    summary = Summary()
    try:
        config = configuration(args)
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    items = collect(args.inputs, args.output, summary)
    started = time.monotonic()
    with httpx.Client(base_url=args.api, timeout=httpx.Timeout(600.0, connect=10.0)) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            logger.error("the API at %s does not answer (%s); start it with `anonymizer up`", args.api, exc)
            return 2
        for item in tqdm(items, desc="files", unit="file", position=0):
            try:
                options = request_options(args, item.is_video)
                if item.is_video:
                    found = anonymise_video(client, item, config, options, position=1)
                else:
                    found = anonymise_image(client, item, config, options)
                summary.done.append(str(item.source))
                summary.report[str(item.source)] = {"output": str(item.target), **found}
            except (RuntimeError, httpx.HTTPError, OSError) as exc:
                summary.failed[str(item.source)] = str(exc)
                tqdm.write(f"failed: {item.source}: {exc}")
    if args.report is not None:
        report = {"files": summary.report, "failed": summary.failed, "skipped": summary.skipped}
        atomic_write(args.report, json.dumps(report, indent=2))
    elapsed = time.monotonic() - started
    sys.stdout.write(
        f"{len(summary.done)} anonymised, {len(summary.failed)} failed, {len(summary.skipped)} skipped "
        f"in {elapsed:.1f} s; output in {args.output}\n"
    )
    for source, error in summary.failed.items():
        sys.stdout.write(f"  failed: {source}: {error}\n")
    return 1 if summary.failed else 0
