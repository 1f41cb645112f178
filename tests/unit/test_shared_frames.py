"""Choosing between shared memory and the request body, per inference server."""

import asyncio
import os

from tritonclient.utils import InferenceServerException

from anonymization_api.inference.shared_frames import SharedFrames


class RefusingServer:
    """Stands in for a server that refuses registrations (OpenVINO Model Server has no shared-memory
    extension; starting one is not possible here)."""

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        raise InferenceServerException("system shared memory is not supported", status="404")


def test_a_server_refusing_shared_memory_gets_the_body_from_then_on():
    frames = SharedFrames(enabled=True)
    url = "http://127.0.0.1:9/"
    assert frames.usable(url)
    before = set(os.listdir("/dev/shm"))
    assert asyncio.run(frames.acquire(url, RefusingServer(), 6_220_800)) is None
    assert not frames.usable(url)
    assert set(os.listdir("/dev/shm")) == before  # the region made for it is gone again


def test_only_servers_on_this_host_and_only_when_enabled():
    assert SharedFrames(enabled=True).usable("http://[::1]:8081/")
    assert not SharedFrames(enabled=True).usable("http://triton:8000/")
    assert not SharedFrames(enabled=False).usable("http://127.0.0.1:8081/")
