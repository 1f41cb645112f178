"""Where job records live, so a restart neither forgets finished jobs nor leaves running ones running.

A record holds what a job is (its owner, its input and output, the request it runs) and where it
stands (state, progress, error). Every state change is a compare-and-set (`update(..., expect=)`),
so two parties racing (a cancel and the job finishing, two cancels, two workers) never both win.
Progress is kept per segment (`report`): the workers running segments of one video each write
their own row, and a record read back carries the sums.

`SqliteJobStore` (the embedded mode, a file under the data folder) and the Redis store of the
Celery mode (`anonymization_api.jobs.redis_store`) implement the same `JobStore`.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"  # was done; its result file was removed by DELETE /jobs/{id}


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})


@dataclass
class SegmentProgress:
    frames_done: int = 0
    frames_total: int = 0
    # configuration entry -> [frames in which it hid something, regions hidden]
    detections: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class JobRecord:
    id: str
    owner: str | None  # the API key that submitted it; None where the service runs without keys
    name: str  # the upload's file name
    input: str  # paths relative to the data folder, so workers may mount it anywhere
    output: str
    request: dict[str, Any]  # what runs it: the configuration text and the video options
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames_total: int = 0  # the container's count until segments report exact ones
    error: str | None = None
    error_status: int | None = None
    segments: list[dict[str, int]] = field(default_factory=list)  # the cuts, when the video is split
    progress: dict[int, SegmentProgress] = field(default_factory=dict)  # per segment, filled on reading

    @property
    def frames_done(self) -> int:
        return sum(p.frames_done for p in self.progress.values())

    @property
    def frames_reported(self) -> int:
        return sum(p.frames_total for p in self.progress.values()) or self.frames_total

    def detections(self) -> dict[int, list[int]]:
        total: dict[int, list[int]] = {}
        for part in self.progress.values():
            for entry, (frames, regions) in part.detections.items():
                seen = total.setdefault(entry, [0, 0])
                seen[0] += frames
                seen[1] += regions
        return total

    def to_json(self) -> str:
        data = asdict(self)
        del data["progress"]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, progress: dict[int, SegmentProgress] | None = None) -> "JobRecord":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        record = cls(**{key: value for key, value in data.items() if key in known})
        return replace(record, state=JobState(record.state), progress=progress or {})


def progress_to_json(progress: SegmentProgress) -> str:
    return json.dumps(asdict(progress))


def progress_from_json(text: str) -> SegmentProgress:
    data = json.loads(text)
    return SegmentProgress(
        data["frames_done"], data["frames_total"], {int(k): v for k, v in data["detections"].items()}
    )


class JobStore:
    """What both modes need of a store. Methods are blocking; the API calls them in a thread."""

    def create(self, record: JobRecord) -> bool:
        """Add a new record; False if another record already has its output name."""
        raise NotImplementedError

    def get(self, job_id: str) -> JobRecord | None:
        raise NotImplementedError

    def list(self, owner: str | None = None, everyone: bool = True) -> list[JobRecord]:
        """Records, oldest first: everyone's, or those of `owner`."""
        raise NotImplementedError

    def update(self, job_id: str, expect: Collection[JobState] | None = None, **changes: Any) -> JobRecord | None:
        """Apply `changes` if the record's state is in `expect` (any state if None), atomically;
        the record as changed, or None where it is missing or in another state."""
        raise NotImplementedError

    def report(self, job_id: str, segment: int, progress: SegmentProgress) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqliteJobStore(JobStore):
    """Records in one SQLite file. Writes are serialised by a lock: one API process owns the file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, owner TEXT, output TEXT UNIQUE, "
                "created REAL, record TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS progress (job TEXT, segment INTEGER, data TEXT NOT NULL, "
                "PRIMARY KEY (job, segment))"
            )

    def _progress(self, job_id: str) -> dict[int, SegmentProgress]:
        rows = self._db.execute("SELECT segment, data FROM progress WHERE job = ?", (job_id,))
        return {segment: progress_from_json(data) for segment, data in rows}

    def create(self, record: JobRecord) -> bool:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
                    (record.id, record.owner, record.output, record.created, record.to_json()),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return JobRecord.from_json(row[0], self._progress(job_id)) if row else None

    def list(self, owner: str | None = None, everyone: bool = True) -> list[JobRecord]:
        with self._lock:
            if everyone:
                rows = self._db.execute("SELECT id, record FROM jobs ORDER BY created").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, record FROM jobs WHERE owner IS ? ORDER BY created", (owner,)
                ).fetchall()
            return [JobRecord.from_json(text, self._progress(job_id)) for job_id, text in rows]

    def update(self, job_id: str, expect: Collection[JobState] | None = None, **changes: Any) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            record = JobRecord.from_json(row[0])
            if expect is not None and record.state not in expect:
                return None
            record = replace(record, **changes)
            self._db.execute("UPDATE jobs SET record = ? WHERE id = ?", (record.to_json(), job_id))
            return replace(record, progress=self._progress(job_id))

    def report(self, job_id: str, segment: int, progress: SegmentProgress) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO progress VALUES (?, ?, ?)", (job_id, segment, progress_to_json(progress))
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
