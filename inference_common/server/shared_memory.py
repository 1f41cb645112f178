"""Triton's system shared-memory extension, server side (the regions and their routes): a client
on the same host writes the images into a POSIX shared-memory region it registered, and the
request names the region instead of carrying the bytes. A 1080p frame is 6 MB; sent in the body
it is copied six or more times on its way (serialising, the socket, the HTTP parser, the body):
about 40 ms of CPU per frame in a profile, both processes together.

Regions map `/dev/shm/<key>` (where Linux keeps `shm_open` objects) read-only. A view handed to a
request keeps its mapping alive, so unregistering a region mid-request is safe.
"""

import json
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from inference_common.errors import BadRequest

SHM_ROOT = Path("/dev/shm")


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    memory: mmap.mmap

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class SharedMemoryRegions:
    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        if not isinstance(key, str) or not key.strip("/") or "/" in key.strip("/"):
            raise BadRequest(f"shared-memory key {key!r} must name a POSIX shared-memory object, e.g. '/frames_0'")
        if not all(isinstance(v, int) and v >= 0 for v in (offset, byte_size)) or byte_size == 0:
            raise BadRequest("'offset' must be a whole number >= 0 and 'byte_size' one > 0")
        path = SHM_ROOT / key.strip("/")
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise BadRequest(f"shared-memory object {key} cannot be opened here ({exc.strerror}); "
                             "the client must run on this host") from exc  # fmt: skip
        try:
            size = os.fstat(descriptor).st_size
            if offset + byte_size > size:
                raise BadRequest(f"shared-memory object {key} holds {size} bytes, fewer than offset + byte_size")
            memory = mmap.mmap(descriptor, size, prot=mmap.PROT_READ)
        finally:
            os.close(descriptor)
        with self._lock:
            if name in self._regions:
                raise BadRequest(f"shared-memory region '{name}' is already registered; unregister it first")
            self._regions[name] = Region(name, key, offset, byte_size, memory)

    def unregister(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._regions.clear()
            else:
                self._regions.pop(name, None)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if name is not None and name not in self._regions:
                raise BadRequest(f"no shared-memory region '{name}' is registered")
            return [r.describe() for r in self._regions.values() if name is None or r.name == name]

    def view(self, name: Any, offset: Any, byte_size: int) -> memoryview:
        """`byte_size` bytes at `offset` within region `name`, without copying."""
        with self._lock:
            region = self._regions.get(name) if isinstance(name, str) else None
        if region is None:
            raise BadRequest(f"no shared-memory region '{name}' is registered; register it first")
        offset = offset or 0
        if not isinstance(offset, int) or offset < 0 or offset + byte_size > region.byte_size:
            raise BadRequest(f"{byte_size} bytes at offset {offset} do not fit region '{name}' of {region.byte_size}")
        start = region.offset + offset
        return memoryview(region.memory)[start : start + byte_size]


router = APIRouter()


def _regions(request: Request) -> SharedMemoryRegions:
    return request.app.state.shared_memory


@router.get("/v2/systemsharedmemory/status")
@router.get("/v2/systemsharedmemory/region/{name}/status")
async def shm_status(request: Request, name: str | None = None) -> list[dict[str, Any]]:
    return _regions(request).status(name)


@router.post("/v2/systemsharedmemory/region/{name}/register")
async def shm_register(request: Request, name: str) -> dict[str, Any]:
    try:
        spec = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the registration is not valid JSON ({exc})") from exc
    if not isinstance(spec, dict):
        raise BadRequest('send {"key": ..., "offset": ..., "byte_size": ...}')
    _regions(request).register(name, spec.get("key"), spec.get("offset", 0), spec.get("byte_size"))
    return {}


@router.post("/v2/systemsharedmemory/unregister")
@router.post("/v2/systemsharedmemory/region/{name}/unregister")
async def shm_unregister(request: Request, name: str | None = None) -> dict[str, Any]:
    _regions(request).unregister(name)
    return {}
