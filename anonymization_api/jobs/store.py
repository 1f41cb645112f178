"""Where job records live, so a restart neither forgets finished jobs nor leaves running ones running.

A record holds what a job is (its owner, its upload's and its output's file names, the request it
runs) and where it stands (state, progress, error). Every state change is a compare-and-set
(`update(..., expect=)`), so two parties racing (a cancel and the job finishing, two cancels, two
workers) never both win. Progress is kept per segment (`report`): the workers running segments of
one video each write their own row, and a record read back carries the sums.

What a store hands back is checked as if it came from the network (anyone who reaches Redis can
write it): a record of another shape, or one whose file names are paths, is `CorruptRecord` and is
never acted on.

`SqliteJobStore` (the embedded mode, a file under the data folder) and the Redis store of the
Celery mode (`anonymization_api.jobs.redis_store`) implement the same `JobStore`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

logger = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"  # was done; its result file was removed by DELETE /jobs/{id}


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
JOB_ID = re.compile(r"[0-9a-f]{12}")
# A file name in one of the job folders, never a path: no separator, no leading dot, no "..".
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}(\.[A-Za-z0-9]{1,8})?")
# Records written before they held names held these relative paths; read as the names they end in.
LEGACY_FOLDERS = {"input": ".uploads/", "output": "anonymized_videos/"}


class CorruptRecord(ValueError):
    """A job record that is not one the service writes."""


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
    input: str  # the upload's file name in the data folder's .uploads (jobs.files derives paths)
    output: str  # the output's file name in the data folder's anonymized_videos
    request: dict[str, Any]  # what runs it: the configuration text and the video options
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames_total: int = 0  # the container's count until segments report exact ones
    error: str | None = None
    error_status: int | None = None
    segments: list[dict[str, int | None]] = field(default_factory=list)  # the cuts, when the video is split
    progress: dict[int, SegmentProgress] = field(default_factory=dict)  # per segment, filled on reading

    def __post_init__(self) -> None:
        if not JOB_ID.fullmatch(self.id):
            raise CorruptRecord(f"a job id is 12 hexadecimal digits, not {self.id[:40]!r}")
        for name in (self.input, self.output):
            if not FILE_NAME.fullmatch(name):
                raise CorruptRecord(f"a job's files are named, not given as paths: {name[:80]!r}")

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
    def from_json(cls, text: str, progress: dict[int, SegmentProgress] | None = None) -> JobRecord:
        """The record a store holds, checked: CorruptRecord where it is not one the service writes."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise CorruptRecord("a job record is a JSON object")
            known = {f.name for f in fields(cls)} - {"progress"}
            data = {key: value for key, value in data.items() if key in known}
            for key, folder in LEGACY_FOLDERS.items():
                if isinstance(data.get(key), str) and data[key].startswith(folder):
                    data[key] = data[key][len(folder) :]
            record = _RECORD.validate_python(data)
        except (ValueError, TypeError, RecursionError) as exc:
            if isinstance(exc, CorruptRecord):
                raise
            problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise CorruptRecord(f"not a job record: {problem}") from None
        return replace(record, progress=progress or {})


_RECORD = TypeAdapter(JobRecord)


def progress_to_json(progress: SegmentProgress) -> str:
    return json.dumps(asdict(progress))


def progress_from_json(text: str) -> SegmentProgress:
    try:
        return _PROGRESS.validate_json(text)
    except ValueError:
        return SegmentProgress()  # a progress row is a report, not a decision: a bad one counts nothing


_PROGRESS = TypeAdapter(SegmentProgress)


class JobStore(Protocol):
    """What both modes need of a store. Methods are blocking; the API calls them in a thread."""

    def create(self, record: JobRecord) -> bool:
        """Add a new record; False if another record already has its output name."""

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None where there is none (or what is there is not a record)."""

    def list(self, owner: str | None = None, everyone: bool = True) -> list[JobRecord]:
        """Records, oldest first: everyone's, or those of `owner`; corrupt ones are left out."""

    def live(self) -> list[JobRecord]:
        """The queued and running records, oldest first."""

    def update(self, job_id: str, expect: Collection[JobState] | None = None, **changes: Any) -> JobRecord | None:
        """Apply `changes` if the record's state is in `expect` (any state if None), atomically;
        the record as changed, or None where it is missing or in another state."""

    def report(self, job_id: str, segment: int, progress: SegmentProgress) -> None:
        """A segment's progress so far."""

    def segment_finished(self, job_id: str, segment: int) -> int:
        """Mark a segment's file complete; how many are. Idempotent: a segment run twice counts once."""

    def close(self) -> None: ...


def checked(text: str, progress: dict[int, SegmentProgress] | None = None) -> JobRecord | None:
    """A stored record, or None (logged) where it is not one."""
    try:
        return JobRecord.from_json(text, progress)
    except CorruptRecord as exc:
        logger.warning("a job record in the store is ignored: %s", exc)
        return None


class SqliteJobStore:
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
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS segments_done (job TEXT, segment INTEGER, PRIMARY KEY (job, segment))"
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
            return checked(row[0], self._progress(job_id)) if row else None

    def list(self, owner: str | None = None, everyone: bool = True) -> list[JobRecord]:
        if everyone:
            return self._select("SELECT id, record FROM jobs ORDER BY created")
        return self._select("SELECT id, record FROM jobs WHERE owner IS ? ORDER BY created", owner)

    def live(self) -> list[JobRecord]:
        return self._select(
            "SELECT id, record FROM jobs WHERE json_extract(record, '$.state') IN (?, ?) ORDER BY created",
            *sorted(state.value for state in ACTIVE),
        )

    def _select(self, query: str, *parameters: Any) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(query, parameters).fetchall()
            found = [checked(text, self._progress(job_id)) for job_id, text in rows]
        return [record for record in found if record is not None]

    def update(self, job_id: str, expect: Collection[JobState] | None = None, **changes: Any) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
            record = checked(row[0]) if row else None
            if record is None:
                return None
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

    def segment_finished(self, job_id: str, segment: int) -> int:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO segments_done VALUES (?, ?)", (job_id, segment))
            return self._db.execute("SELECT COUNT(*) FROM segments_done WHERE job = ?", (job_id,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
