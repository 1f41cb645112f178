"""Where a job's files are, derived here and only here from the data folder and the names a record
holds. A record holds names, never paths (`JobRecord` refuses anything else), so a record written
into the store by someone other than the API cannot make a worker read, write or delete outside
the data folder's `.uploads` and `anonymized_videos`.

Files never outlive their job: the upload is removed when the job ends however it ends, the
partial output unless it was completed, and at start-up whatever an earlier crash left (`sweep`).
"""

import contextlib
import re
import time
import uuid
from datetime import datetime
from pathlib import Path

from anonymization_api.jobs.store import JobRecord

UPLOADS = ".uploads"
VIDEOS = "anonymized_videos"
WORK_PREFIX = ".work-"  # a job's segment files, in the videos folder so that renames stay on one file system
MAX_STEM = 100  # characters of the original name kept in the output's, so any file system takes it


def input_path(data_dir: Path, record: JobRecord) -> Path:
    return data_dir / UPLOADS / record.input


def output_path(data_dir: Path, record: JobRecord) -> Path:
    return data_dir / VIDEOS / record.output


def work_dir(data_dir: Path, record: JobRecord) -> Path:
    return data_dir / VIDEOS / f"{WORK_PREFIX}{record.id}"


def upload_path(data_dir: Path, filename: str | None) -> Path:
    """A new upload's path: a random name, keeping the client's extension (letters and digits only)."""
    folder = data_dir / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    suffix = re.sub(r"[^A-Za-z0-9]", "", Path(filename or "").suffix)[:8]
    return folder / (f"{uuid.uuid4().hex}.{suffix}" if suffix else uuid.uuid4().hex)


def output_name(original: str, when: datetime, number: int = 1) -> str:
    """BMW's `Anonymized_<name>_<dd_mm_yy_HH_MM_SS>.mp4`: <name> is the upload's name up to its first
    dot, reduced to safe characters; a second video in the same second gets `_2`."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", (original or "video").split(".")[0]).strip("_")[:MAX_STEM] or "video"
    base = f"Anonymized_{stem}_{when.strftime('%d_%m_%y_%H_%M_%S')}"
    return f"{base}.mp4" if number == 1 else f"{base}_{number}.mp4"


def job_files(data_dir: Path, record: JobRecord) -> list[Path]:
    """What a job has on disk while it is queued or running: its upload, its segment folder and
    the files in it, its partial outputs (the segment folder last, so it can be removed in order)."""
    output, work = output_path(data_dir, record), work_dir(data_dir, record)
    found = [input_path(data_dir, record), *output.parent.glob(f".{output.name[:64]}.*.partial")]
    return found + ([*work.iterdir(), work] if work.is_dir() else [])


def remove_job_files(data_dir: Path, record: JobRecord, keep_output: bool) -> None:
    """The job's upload, its segment folder and its partial outputs; its output too unless kept."""
    for path in job_files(data_dir, record):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
    if not keep_output:
        output_path(data_dir, record).unlink(missing_ok=True)


def sweep(data_dir: Path, live: list[JobRecord], older_than_s: float = 0.0) -> list[Path]:
    """Remove uploads, partial outputs and segment folders that belong to no live job (left by a
    crash), untouched for `older_than_s` (an upload still arriving at another replica is fresh)."""
    keep_inputs = {r.input for r in live}
    keep_outputs = {r.output[:64] for r in live}
    keep_work = {f"{WORK_PREFIX}{r.id}" for r in live}
    cutoff = time.time() - older_than_s
    removed: list[Path] = []

    def stale(path: Path) -> bool:
        try:
            return path.stat().st_mtime <= cutoff
        except FileNotFoundError:
            return False

    uploads, videos = data_dir / UPLOADS, data_dir / VIDEOS
    candidates = [p for p in uploads.iterdir() if p.name not in keep_inputs] if uploads.is_dir() else []
    if videos.is_dir():
        for path in videos.iterdir():
            if path.name.startswith(".") and path.name.endswith(".partial"):
                if path.name[1:].rsplit(".", 2)[0][:64] not in keep_outputs:
                    candidates.append(path)
            elif path.name.startswith(WORK_PREFIX) and path.is_dir() and path.name not in keep_work:
                candidates.extend(path.iterdir())
                candidates.append(path)
    for path in [p for p in candidates if stale(p)]:  # judged before removing: that touches the folders
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
            removed.append(path)
    return removed
