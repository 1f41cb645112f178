"""Admission control for image requests: a bounded number run at once, a bounded number wait, and
beyond that the answer is 503 with Retry-After at once instead of an unbounded wait. Each API key
also has a bound of its own (429), so one client cannot take every slot."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anonymization_api.errors import AnonymisationError


class ServiceBusy(AnonymisationError):
    status_code = 503
    headers = {"Retry-After": "2"}  # noqa: RUF012 (read only)


class TooManyRequests(AnonymisationError):
    status_code = 429
    headers = {"Retry-After": "1"}  # noqa: RUF012 (read only)


class Admission:
    def __init__(self, running: int, waiting: int, per_key: int) -> None:
        self._slots = asyncio.Semaphore(running)
        self._running, self._max_waiting, self._per_key_limit = running, waiting, per_key
        self._waiting = 0
        self._per_key: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        """Every slot taken: a new request waits, or is refused when the wait is full."""
        return self._slots.locked()

    @asynccontextmanager
    async def admit(self, key_id: str | None) -> AsyncIterator[None]:
        """Hold a slot for one request of `key_id` (None: no keys configured, no per-key bound)."""
        if key_id is not None and self._per_key.get(key_id, 0) >= self._per_key_limit:
            raise TooManyRequests(
                f"this API key already has {self._per_key_limit} requests in progress, the most allowed; "
                "wait for one to finish"
            )
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise ServiceBusy(
                f"{self._running} images are being anonymised and {self._max_waiting} are waiting, the most "
                "allowed; try again shortly"
            )
        if key_id is not None:
            self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
        try:
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                yield
            finally:
                self._slots.release()
        finally:
            if key_id is not None:
                self._per_key[key_id] -= 1
                if not self._per_key[key_id]:
                    del self._per_key[key_id]
