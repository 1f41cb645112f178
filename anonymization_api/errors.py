"""Errors of the anonymisation API, each carrying its HTTP status.

AnonymisationError                   500
 ├── InvalidRequest                  400  (a missing field, unreadable upload)
 │    ├── InvalidMedia               400  (bytes that are not an image or video we can read)
 │    └── RefusedUrl                 400  (/set_url: a URL the registry's URL policy refuses)
 ├── Unauthenticated                 401  (auth: no key, or an unknown one)
 ├── Forbidden                       403  (auth: a user key where an admin key is needed)
 ├── UnknownRegistration             404  (a URL that is not registered)
 │    └── UnknownJob                 404  (a job id that is not the caller's)
 ├── JobNotDone                      409  (a job's result asked for before it is done)
 ├── ResultGone                      410  (a job's result was deleted)
 ├── QueueFull                       429  (the embedded pool's queue, or a key's quota of jobs)
 ├── JobsUnavailable                 503  (the broker did not take a job)
 ├── StorageFull                     507  (the data folder has no room for an upload or output)
 ├── UnreachableServer               400  (/set_url: nothing answers there, or neither protocol)
 ├── TooManyServers                  409  (/set_url: the registry holds its most servers)
 ├── PayloadTooLarge                 413
 ├── UnsupportedMedia                415
 ├── InvalidConfiguration            422  (every problem of a configuration, at once)
 └── InferenceError                  502  (an inference server answered with an error, or nonsense)
      ├── InferenceRejected          422  (it refused the request's own parameters)
      ├── InferenceUnavailable       503  (it cannot be reached)
      └── InferenceTimeout           504  (it did not answer in time)
"""

import errno
import sqlite3
from typing import Any, ClassVar


class AnonymisationError(Exception):
    status_code = 500
    headers: ClassVar[dict[str, str]] = {}  # sent with the error answer


class InvalidRequest(AnonymisationError):
    status_code = 400


class InvalidMedia(InvalidRequest):
    pass


class RefusedUrl(InvalidRequest):
    pass


class UnknownRegistration(AnonymisationError):
    status_code = 404


class UnreachableServer(AnonymisationError):
    status_code = 400


class TooManyServers(AnonymisationError):
    status_code = 409


class UnknownJob(UnknownRegistration):
    pass


class JobNotDone(AnonymisationError):
    status_code = 409


class ResultGone(AnonymisationError):
    status_code = 410


class QueueFull(AnonymisationError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class JobsUnavailable(AnonymisationError):
    status_code = 503


class StorageFull(AnonymisationError):
    """No room left where the service writes (ENOSPC, a quota): nothing partial was kept."""

    status_code = 507


class PayloadTooLarge(AnonymisationError):
    status_code = 413


class UnsupportedMedia(AnonymisationError):
    status_code = 415


class InvalidConfiguration(AnonymisationError):
    """Carries every problem found, each with the entry index, field, bad value and valid choices."""

    status_code = 422

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        lines = [problem["message"] for problem in problems]
        super().__init__(f"{len(problems)} problem(s) in the configuration: " + "; ".join(lines))


class InferenceError(AnonymisationError):
    status_code = 502


class InferenceRejected(InferenceError):
    status_code = 422


class InferenceUnavailable(InferenceError):
    status_code = 503


class InferenceTimeout(InferenceError):
    status_code = 504


NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_storage_full(exc: BaseException) -> bool:
    """The disk (or a quota) has no room: a file or SQLite could not write."""
    if isinstance(exc, OSError) and exc.errno in NO_ROOM:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
