"""Admission control for image requests: what runs at once is bounded by count and by pixels (the
memory an image costs grows with its pixels, not with its bytes: a 100 KB PNG may hold 36 MP), a
bounded number wait, first come first served, and beyond that the answer is 503 with Retry-After
at once instead of an unbounded wait. Each API key also has a bound of its own (429), so one
client cannot take every slot."""

import asyncio
from collections import deque
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
    def __init__(self, running: int, waiting: int, per_key: int, pixels: int) -> None:
        self._running, self._max_waiting, self._per_key_limit, self._pixels = running, waiting, per_key, pixels
        self._free_slots, self._free_pixels = running, pixels
        self._queue: deque[object] = deque()  # the waiting requests, in order of arrival
        self._changed = asyncio.Condition()
        self._per_key: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        """A new request would wait (or be refused when the wait is full)."""
        return bool(self._queue) or self._free_slots == 0

    def _fits(self, weight: int) -> bool:
        return self._free_slots > 0 and self._free_pixels >= weight

    @asynccontextmanager
    async def admit(self, key_id: str | None, pixels: int = 0) -> AsyncIterator[None]:
        """Hold a slot and `pixels` of the budget for one request of `key_id` (None: no keys
        configured, no per-key bound). An image larger than the whole budget runs alone."""
        weight = min(pixels, self._pixels)
        if key_id is not None and self._per_key.get(key_id, 0) >= self._per_key_limit:
            raise TooManyRequests(
                f"this API key already has {self._per_key_limit} requests in progress, the most allowed; "
                "wait for one to finish"
            )
        if (self._queue or not self._fits(weight)) and len(self._queue) >= self._max_waiting:
            raise ServiceBusy(
                f"{self._running - self._free_slots} images are being anonymised and {len(self._queue)} are "
                "waiting, the most allowed; try again shortly"
            )
        if key_id is not None:
            self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
        try:
            await self._acquire(weight)
            try:
                yield
            finally:
                async with self._changed:
                    self._free_slots += 1
                    self._free_pixels += weight
                    self._changed.notify_all()
        finally:
            if key_id is not None:
                self._per_key[key_id] -= 1
                if not self._per_key[key_id]:
                    del self._per_key[key_id]

    async def _acquire(self, weight: int) -> None:
        ticket = object()
        async with self._changed:
            self._queue.append(ticket)
            try:
                # first come first served: a large image is not overtaken for ever by small ones
                await self._changed.wait_for(lambda: self._queue[0] is ticket and self._fits(weight))
            except BaseException:  # the client went away while it waited
                self._queue.remove(ticket)
                self._changed.notify_all()
                raise
            self._queue.popleft()
            self._free_slots -= 1
            self._free_pixels -= weight
            self._changed.notify_all()
