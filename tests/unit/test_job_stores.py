"""Both job stores, SQLite (the embedded mode) and Redis (the Celery mode, on a real redis-server),
behave alike: records round-trip, listing by owner, compare-and-set state changes with one winner,
output names reserved once, progress summed over segments."""

import json
import threading
from collections.abc import Iterator

import pytest

from anonymization_api.jobs.redis_store import RedisJobStore
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState, JobStore, SegmentProgress, SqliteJobStore
from anonymizer_tools.processes import redis_server

A = "a" * 12


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


def ids(*letters: str) -> list[str]:
    return [letter * 12 for letter in letters]


def record(job_id: str, owner: str | None = "alice", output: str | None = None) -> JobRecord:
    job_id = job_id * 12 if len(job_id) == 1 else job_id
    return JobRecord(job_id, owner, f"{job_id}.mp4", f"{job_id}.mp4", output or f"out_{job_id}.mp4", {"x": 1})


def test_records_round_trip_and_list_by_owner(store):
    assert store.create(record("a")) and store.create(record("b", owner="bob")) and store.create(record("c", None))
    assert not store.create(record("d", output=f"out_{'a' * 12}.mp4"))  # the output name is taken
    got = store.get("a" * 12)
    assert (got.id, got.owner, got.request, got.state) == ("a" * 12, "alice", {"x": 1}, JobState.QUEUED)
    assert [r.id for r in store.list()] == ids("a", "b", "c")
    assert [r.id for r in store.list("bob", everyone=False)] == ids("b")
    assert [r.id for r in store.list(None, everyone=False)] == ids("c")
    assert store.get("nope") is None and store.update("nope", state=JobState.DONE) is None


def test_state_changes_are_compare_and_set_with_one_winner(store):
    store.create(record("a"))
    results = []
    barrier = threading.Barrier(8)

    def cancel():
        barrier.wait()
        results.append(store.update(A, ACTIVE, state=JobState.CANCELLED))

    threads = [threading.Thread(target=cancel) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert store.update(A, {JobState.RUNNING}, state=JobState.DONE) is None
    assert store.get(A).state is JobState.CANCELLED


def test_progress_is_summed_over_segments(store):
    store.create(record("a"))
    store.report(A, 0, SegmentProgress(10, 30, {0: [4, 5]}))
    store.report(A, 1, SegmentProgress(5, 30, {0: [1, 2], 1: [1, 1]}))
    store.report(A, 1, SegmentProgress(30, 30, {0: [2, 3], 1: [1, 1]}))  # a later report replaces
    got = store.get(A)
    assert (got.frames_done, got.frames_reported) == (40, 60)
    assert got.detections() == {0: [6, 8], 1: [1, 1]}


def test_live_lists_only_queued_and_running_jobs(store):
    for letter in "abc":
        store.create(record(letter))
    store.update("b" * 12, state=JobState.RUNNING)
    store.update("c" * 12, state=JobState.DONE)
    assert [r.id for r in store.live()] == ids("a", "b")


def test_a_segment_counts_once_however_often_it_finishes(store):
    store.create(record("a"))
    assert [store.segment_finished(A, segment) for segment in (0, 1, 1, 2, 0)] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "change",
    [
        {"input": "../../../etc/passwd"},
        {"output": "/tmp/elsewhere.mp4"},
        {"output": "anonymized_videos/../../x.mp4"},
        {"id": "../x"},
        {"state": "exploded"},
        {"request": "not a mapping"},
    ],
)
def test_a_record_written_by_someone_else_is_never_handed_out(store, change):
    """What anyone who reaches the store writes there is checked as if it came from the network."""
    store.create(record("a"))
    data = json.loads(record("a").to_json()) | change
    raw = json.dumps(data)
    if isinstance(store, SqliteJobStore):
        store._db.execute("UPDATE jobs SET record = ? WHERE id = ?", (raw, A))
    else:
        store._redis.set(store._key("job", A), raw)
    assert store.get(A) is None and store.list() == [] and store.live() == []
    assert store.update(A, state=JobState.RUNNING) is None


def test_records_that_held_paths_are_read_as_the_names_they_end_in(store):
    """Records written before names replaced paths (a store kept over an upgrade) still work."""
    data = json.loads(record("a").to_json()) | {"input": f".uploads/{A}.mp4", "output": "anonymized_videos/o.mp4"}
    store.create(record("a"))
    if isinstance(store, SqliteJobStore):
        store._db.execute("UPDATE jobs SET record = ? WHERE id = ?", (json.dumps(data), A))
    else:
        store._redis.set(store._key("job", A), json.dumps(data))
    got = store.get(A)
    assert (got.input, got.output) == (f"{A}.mp4", "o.mp4")
