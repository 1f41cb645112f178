"""How a step of a job lost with its worker gets going again within seconds, not at the broker's
visibility timeout.

A worker holds a lease on each step it runs (`holding`): a Redis key with a time to live of
`worker_lease_s`, renewed by a thread every third of it, beside an entry in a hash of running
steps that says how to send the step again. A worker whose process group is killed, or whose
machine is lost, stops renewing; its lease lapses. Every worker's reaper (`Reaper`, a thread in
the worker's main process) looks for running steps without a lease every third of the lease, claims
each with HDEL (only one reaper wins) and sends it to the queue again, where an idle worker takes it.

Why not only the broker: Redis's transport gives a task back after its visibility timeout, which
must exceed the longest task (an hour), so a lost worker stalled its job that long. RabbitMQ would
requeue at once on a closed connection, but it is a second stateful service beside the Redis that
holds records and the registry, still waits for missed heartbeats when a machine vanishes without
closing its connections, and times out long unacknowledged tasks on its own. A lease covers a
killed process and a vanished machine alike, with one setting. The broker's own redelivery stays as
the last resort; every step is idempotent, so a step run twice still ends in one output.

What the hash holds comes from Redis, so it is checked before anything is sent: a known task name,
a job id, a whole segment number and a queue name, nothing else.
"""

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from anonymization_api.jobs.store import JOB_ID

logger = logging.getLogger(__name__)

PREFIX = "anonymizer:"
TASKS = frozenset({"anonymizer.start", "anonymizer.segment", "anonymizer.join"})
QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


@dataclass(frozen=True)
class Step:
    task: str
    args: tuple[str] | tuple[str, int]
    queue: str

    @property
    def key(self) -> str:
        return ":".join([self.task, *map(str, self.args)])

    @classmethod
    def parse(cls, text: str) -> "Step | None":
        """A step as the hash holds it, or None where it is not one this service writes."""
        try:
            data = json.loads(text)
            task, args, queue = data["task"], data["args"], data["queue"]
        except (ValueError, TypeError, KeyError):
            return None
        if task not in TASKS or not isinstance(queue, str) or not QUEUE.fullmatch(queue) or not isinstance(args, list):
            return None
        if not args or not isinstance(args[0], str) or not JOB_ID.fullmatch(args[0]):
            return None
        wanted = 2 if task == "anonymizer.segment" else 1
        if len(args) != wanted or (wanted == 2 and (type(args[1]) is not int or not 0 <= args[1] < 100_000)):
            return None
        return cls(task, tuple(args), queue)

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "args": list(self.args), "queue": self.queue})


class Leases:
    def __init__(self, client: redis.Redis, lease_s: float, prefix: str = PREFIX) -> None:
        self._redis = client
        self._lease_ms = int(lease_s * 1000)
        self._steps = f"{prefix}steps"
        self._prefix = f"{prefix}lease:"

    @property
    def period_s(self) -> float:
        return self._lease_ms / 3000

    @contextmanager
    def holding(self, step: Step, holder: str) -> Iterator[None]:
        """Hold the step's lease while the block runs, renewed every third of it."""
        lease = self._prefix + step.key
        # the lease before the entry, and the entry gone before the lease: a reaper never sees an
        # entry without a lease while its step runs
        self._redis.set(lease, holder, px=self._lease_ms)
        self._redis.hset(self._steps, step.key, step.to_json())
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.period_s):
                try:
                    self._redis.set(lease, holder, px=self._lease_ms)
                except redis.RedisError as exc:  # Redis away for a moment: the next renewal may do
                    logger.warning("could not renew the lease on %s: %s", step.key, exc)

        renewer = threading.Thread(target=renew, name=f"lease {step.key}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self._redis.hdel(self._steps, step.key)
            self._redis.delete(lease)

    def claim_lost(self) -> list[Step]:
        """The running steps whose lease lapsed, each claimed by exactly one caller."""
        claimed = []
        for key, text in self._redis.hgetall(self._steps).items():
            if self._redis.exists(self._prefix + key):
                continue
            if not self._redis.hdel(self._steps, key):
                continue  # another reaper took it, or its step has just ended
            step = Step.parse(text) if isinstance(text, str) else None
            if step is None or step.key != key:
                logger.warning("a running-step entry in Redis is not one this service writes; dropped: %.200r", key)
                continue
            claimed.append(step)
        return claimed


class Reaper:
    """A thread that sends lost steps to the queue again, every third of the lease."""

    def __init__(self, leases: Leases, send: Callable[[Step], None]) -> None:
        self._leases = leases
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._leases.period_s):
            try:
                for step in self._leases.claim_lost():
                    logger.warning("the worker running %s was lost; the step is sent to another worker", step.key)
                    self._send(step)
            except redis.RedisError as exc:
                logger.warning("could not look for lost steps: %s", exc)
