"""The Celery mode's job store: records in Redis, which every API replica and worker reaches.

Keys, under a prefix: `job:<id>` the record (JSON), `jobs` the ids by creation time, `live` the
ids of queued and running jobs, `job:<id>:progress` a hash of each segment's progress,
`job:<id>:segments` the set of segments finished, `output:<name>` the job that reserved an output
name. State changes are compare-and-set through WATCH/MULTI, so the API and the workers never
overwrite each other. Every record read back is checked (`store.checked`): Redis is not trusted
to hold only what the service wrote.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import redis

from anonymization_api.jobs.store import (
    ACTIVE,
    JobRecord,
    JobState,
    SegmentProgress,
    checked,
    progress_from_json,
    progress_to_json,
)

PREFIX = "anonymizer:"


class RedisJobStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _progress(self, job_id: str) -> dict[int, SegmentProgress]:
        rows = self._redis.hgetall(self._key("job", job_id, "progress"))
        return {int(segment): progress_from_json(data) for segment, data in rows.items()}

    def create(self, record: JobRecord) -> bool:
        if not self._redis.set(self._key("output", record.output), record.id, nx=True):
            return False
        with self._redis.pipeline() as pipe:
            pipe.set(self._key("job", record.id), record.to_json())
            pipe.zadd(self._key("jobs"), {record.id: record.created})
            pipe.zadd(self._key("live"), {record.id: record.created})
            pipe.execute()
        return True

    def get(self, job_id: str) -> JobRecord | None:
        text = self._redis.get(self._key("job", job_id))
        return checked(text, self._progress(job_id)) if isinstance(text, str) else None

    def list(self, owner: str | None = None, everyone: bool = True) -> list[JobRecord]:
        return [r for r in self._records("jobs") if everyone or r.owner == owner]

    def live(self) -> list[JobRecord]:
        return [r for r in self._records("live") if r.state in ACTIVE]

    def _records(self, index: str) -> list[JobRecord]:
        ids = self._redis.zrange(self._key(index), 0, -1)
        texts = self._redis.mget([self._key("job", job_id) for job_id in ids]) if ids else []
        found = [checked(text) for text in texts if isinstance(text, str)]
        return [replace(record, progress=self._progress(record.id)) for record in found if record is not None]

    def update(self, job_id: str, expect: Collection[JobState] | None = None, **changes: Any) -> JobRecord | None:
        key = self._key("job", job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    text = pipe.get(key)
                    record = checked(text) if isinstance(text, str) else None
                    if record is None or (expect is not None and record.state not in expect):
                        return None
                    record = replace(record, **changes)
                    pipe.multi()
                    pipe.set(key, record.to_json())
                    if record.state not in ACTIVE:
                        pipe.zrem(self._key("live"), job_id)
                    pipe.execute()
                    return replace(record, progress=self._progress(job_id))
                except redis.WatchError:
                    time.sleep(0.001)  # someone else changed it first: read it again

    def report(self, job_id: str, segment: int, progress: SegmentProgress) -> None:
        self._redis.hset(self._key("job", job_id, "progress"), str(segment), progress_to_json(progress))

    def segment_finished(self, job_id: str, segment: int) -> int:
        key = self._key("job", job_id, "segments")
        with self._redis.pipeline() as pipe:
            pipe.sadd(key, segment)
            pipe.scard(key)
            return int(pipe.execute()[1])

    def close(self) -> None:
        self._redis.close()
