"""Both job stores, SQLite (the embedded mode) and Redis (the Celery mode, on a real redis-server),
behave alike: records round-trip, listing by owner, compare-and-set state changes with one winner,
output names reserved once, progress summed over segments."""

import threading
from collections.abc import Iterator

import pytest

from anonymization_api.jobs.redis_store import RedisJobStore
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState, JobStore, SegmentProgress, SqliteJobStore
from anonymizer_tools.processes import redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        the_store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        the_store = RedisJobStore(request.getfixturevalue("redis_url"), prefix=f"test-{tmp_path.name}:")
    yield the_store
    the_store.close()


def record(job_id: str, owner: str | None = "alice", output: str | None = None) -> JobRecord:
    return JobRecord(job_id, owner, f"{job_id}.mp4", f".uploads/{job_id}.mp4", output or f"v/{job_id}.mp4", {"x": 1})


def test_records_round_trip_and_list_by_owner(store):
    assert store.create(record("a")) and store.create(record("b", owner="bob")) and store.create(record("c", None))
    assert not store.create(record("d", output="v/a.mp4"))  # the output name is taken
    got = store.get("a")
    assert (got.id, got.owner, got.request, got.state) == ("a", "alice", {"x": 1}, JobState.QUEUED)
    assert [r.id for r in store.list()] == ["a", "b", "c"]
    assert [r.id for r in store.list("bob", everyone=False)] == ["b"]
    assert [r.id for r in store.list(None, everyone=False)] == ["c"]
    assert store.get("nope") is None and store.update("nope", state=JobState.DONE) is None


def test_state_changes_are_compare_and_set_with_one_winner(store):
    store.create(record("a"))
    results = []
    barrier = threading.Barrier(8)

    def cancel():
        barrier.wait()
        results.append(store.update("a", ACTIVE, state=JobState.CANCELLED))

    threads = [threading.Thread(target=cancel) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert store.update("a", {JobState.RUNNING}, state=JobState.DONE) is None
    assert store.get("a").state is JobState.CANCELLED


def test_progress_is_summed_over_segments(store):
    store.create(record("a"))
    store.report("a", 0, SegmentProgress(10, 30, {0: [4, 5]}))
    store.report("a", 1, SegmentProgress(5, 30, {0: [1, 2], 1: [1, 1]}))
    store.report("a", 1, SegmentProgress(30, 30, {0: [2, 3], 1: [1, 1]}))  # a later report replaces
    got = store.get("a")
    assert (got.frames_done, got.frames_reported) == (40, 60)
    assert got.detections() == {0: [6, 8], 1: [1, 1]}
