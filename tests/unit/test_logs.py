"""The log formats and the request id: one JSON object per line carrying the id of the request
being served, the text format with it too, which ids from a client are kept, and the id passed on
to a BMW inference API (the Open Inference Protocol client's is checked in test_observability)."""

import asyncio
import json
import logging
import re
import sys
from datetime import datetime

import httpx
import numpy as np
import pytest

from anonymization_api.inference.bmw import BmwClient
from anonymization_api.registry import ModelInfo
from anonymizer_shared.logs import JsonFormatter, TextFormatter, accept_request_id, request_id, request_id_headers
from anonymizer_shared.wire import Task

FACES = ModelInfo("centerface", Task.DETECTION, ("face",))


def record(message: str = "hid %d faces", args: tuple = (3,), exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger("anonymizer.test").makeRecord(
        "anonymizer.test", logging.WARNING, __file__, 1, message, args, exc_info, extra=extra
    )


def test_json_lines_carry_the_request_id_of_the_context():
    token = request_id.set("req-42")
    try:
        line = JsonFormatter().format(record(route="/anonymize", status=200))
    finally:
        request_id.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "hid 3 faces" and entry["level"] == "WARNING" and entry["logger"] == "anonymizer.test"
    assert entry["request_id"] == "req-42"
    assert entry["route"] == "/anonymize" and entry["status"] == 200  # extra= fields
    when = datetime.fromisoformat(entry["time"])
    assert when.utcoffset().total_seconds() == 0
    assert "exception" not in entry and "args" not in entry and "msg" not in entry


def test_json_lines_outside_a_request_have_no_id_and_keep_the_exception():
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        line = JsonFormatter().format(record("failed", (), exc_info=sys.exc_info()))
    entry = json.loads(line)
    assert "request_id" not in entry
    assert "ValueError: broken" in entry["exception"] and "Traceback" in entry["exception"]
    assert "\n" not in line  # the traceback's lines are escaped inside the one JSON line


def test_threads_and_tasks_started_in_a_request_inherit_its_id():
    async def headers() -> dict[str, str]:
        return request_id_headers()

    async def served() -> list[str | None]:
        request_id.set("inherited")
        in_thread = await asyncio.to_thread(lambda: json.loads(JsonFormatter().format(record())).get("request_id"))
        in_task = await asyncio.create_task(headers())
        return [in_thread, in_task.get("X-Request-ID")]

    assert asyncio.run(served()) == ["inherited", "inherited"]
    assert request_id_headers() == {}  # nothing leaks out of the request's context


def test_the_text_format_names_the_request():
    token = request_id.set("abc")
    try:
        assert re.search(r" WARNING anonymizer\.test \[abc\]: hid 3 faces$", TextFormatter().format(record()))
    finally:
        request_id.reset(token)
    assert TextFormatter().format(record()).endswith("WARNING anonymizer.test: hid 3 faces")


@pytest.mark.parametrize("given", ["a" * 128, "trace-1.2:3_4", "0af7651916cd43dd8448eb211c80319c"])
def test_well_formed_request_ids_are_kept(given):
    assert accept_request_id(given) == given


@pytest.mark.parametrize("given", [None, "", "a" * 129, "two words", "x\ny", "<script>", "ünïcode"])
def test_other_request_ids_are_replaced_by_new_ones(given):
    made = accept_request_id(given)
    assert made != given and re.fullmatch(r"[0-9a-f]{32}", made)
    assert accept_request_id(given) != made


def test_the_bmw_client_passes_the_request_id_on():
    seen: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Request-ID"))
        return httpx.Response(200, json={"data": {"bounding-boxes": []}, "error": "", "success": True})

    async def call() -> None:
        client = BmwClient(5, max_detections=100)
        client._http = httpx.AsyncClient(transport=httpx.MockTransport(server))
        request_id.set("from-the-api")
        try:
            await client.infer("http://bmw/", FACES, np.zeros((2, 8, 8, 3), np.uint8), {})
        finally:
            await client.close()

    asyncio.run(call())
    assert seen == ["from-the-api", "from-the-api"]  # one request per image of the batch
