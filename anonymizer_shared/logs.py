"""Logs every process of the product writes: JSON (one object per line) or text, each line with the
id of the request being served, and that id itself. Standard library only: the `anonymizer`
command configures logging before it knows which service, if any, it runs."""

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Set by the HTTP middleware for the request's task; tasks and threads it starts inherit it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    return request_id.get()


def request_id_headers() -> dict[str, str]:
    """Headers that pass the current request id on to another service."""
    current = request_id.get()
    return {REQUEST_ID_HEADER: current} if current else {}


def accept_request_id(given: str | None) -> str:
    """`given` where it is a well-formed id (it goes into logs and headers), a new one otherwise."""
    if given and _VALID_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


# Attributes every LogRecord has; the others on a record came as `extra=` and go into the JSON.
# uvicorn adds `color_message`, the message with terminal colours.
_RECORD_ATTRIBUTES = {*vars(logging.makeLogRecord({})), "message", "asctime", "color_message", "request_tag"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id (while a
    request is served), the record's `extra=` fields and the exception text if any.

    The request id is read when the record is formatted, which the standard handlers do in the
    thread and context that logged it."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None) or current_request_id()
        if current:
            entry["request_id"] = current
        entry.update({key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line text, with the request id after the logger's name while one is served."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        current = getattr(record, "request_id", None) or current_request_id()
        record.request_tag = f" [{current}]" if current else ""
        return super().format(record)


LOG_FORMATS = ("json", "text")


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr at `level` in `log_format` ("json" or "text"), for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
