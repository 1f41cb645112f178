"""Images to inference servers on this host through shared memory (Triton's system shared-memory
extension, which our servers and Triton both speak) instead of the request body.

A 1080p frame is 6 MB; in the body it is copied several times on each side of the socket, which
cost about 30 ms of the API's CPU and 9 ms of the server's per frame in a profile.
Here it is copied once, into a region the server maps. Regions are pooled per server: one
region serves one call at a time and is reused, so a server registers each only once.

Only servers on loopback are tried (elsewhere the region does not exist), and a server that
refuses a registration (OpenVINO Model Server, another host's namespace) gets the body instead.
"""

import itertools
import logging
import os
import re
from dataclasses import dataclass

import aiohttp
import httpx
import numpy as np
import tritonclient.http.aio as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

logger = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
POOL_SIZE = 4  # free regions kept per server
# How a server says a region it was told of does not exist (ours; Triton's): it restarted and lost
# it. Any other error is about the request itself, and sending the body instead would not help.
LOST_REGION = re.compile(r"no shared-memory region .* is registered|unable to find .*shared memory region", re.I)
_names = itertools.count()


def is_lost_region(message: str) -> bool:
    return LOST_REGION.search(message or "") is not None


@dataclass
class SharedRegion:
    name: str
    handle: shm.SharedMemoryRegion
    byte_size: int

    def write(self, images: np.ndarray) -> None:
        view = shm.get_contents_as_numpy(self.handle, np.uint8, [self.byte_size])
        view[: images.nbytes] = images.reshape(-1)


class SharedFrames:
    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._free: dict[str, list[SharedRegion]] = {}
        self._refused: set[str] = set()

    def usable(self, url: str) -> bool:
        return self._enabled and httpx.URL(url).host in LOOPBACK and url not in self._refused

    async def acquire(self, url: str, client: triton.InferenceServerClient, byte_size: int) -> SharedRegion | None:
        """A region registered with the server at `url` holding at least `byte_size` bytes, or None
        where the server does not take shared memory (remembered)."""
        free = self._free.setdefault(url, [])
        for index, region in enumerate(free):
            if region.byte_size >= byte_size:
                return free.pop(index)
        size = -(-byte_size // (1 << 20)) << 20  # whole MiB, so nearby sizes share regions
        name = f"anonymizer_{os.getpid()}_{next(_names)}"
        handle = shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
        try:
            await client.register_system_shared_memory(name, "/" + name, size)
        except InferenceServerException as exc:
            shm.destroy_shared_memory_region(handle)
            logger.info("%s takes no shared memory (%s); images go in the request body", url, exc.message())
            self._refused.add(url)
            return None
        except BaseException:
            shm.destroy_shared_memory_region(handle)
            raise
        return SharedRegion(name, handle, size)

    async def release(self, url: str, client: triton.InferenceServerClient, region: SharedRegion) -> None:
        free = self._free.setdefault(url, [])
        free.append(region)
        if len(free) > POOL_SIZE:
            await self._drop(client, free.pop(0))

    async def forget(
        self, url: str, client: triton.InferenceServerClient | None, also: SharedRegion | None = None
    ) -> None:
        """Destroy the server's regions (and `also`, one in use), e.g. after it restarted and lost them."""
        for region in [*self._free.pop(url, []), *([also] if also else [])]:
            await self._drop(client, region)

    async def close(self, clients: dict[str, triton.InferenceServerClient]) -> None:
        for url in list(self._free):
            await self.forget(url, clients.get(url))

    @staticmethod
    async def _drop(client: triton.InferenceServerClient | None, region: SharedRegion) -> None:
        if client is not None:
            try:
                await client.unregister_system_shared_memory(region.name)
            except (InferenceServerException, aiohttp.ClientError, OSError) as exc:  # the server may be gone
                logger.debug("unregistering %s: %s", region.name, exc)
        shm.destroy_shared_memory_region(region.handle)
