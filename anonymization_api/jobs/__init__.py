"""Video jobs: records in a store (`store`), what runs one (`runner`), and the API's side of them
(`manager`: ownership, cancel, delete, results, the embedded pool)."""

from anonymization_api.jobs.manager import (
    JobManager,
    JobNotDone,
    Jobs,
    LocalCaller,
    QueueFull,
    ResultGone,
    UnknownJob,
    describe,
    output_name,
    upload_path,
)
from anonymization_api.jobs.runner import JobContext, anonymise_job, job_request
from anonymization_api.jobs.store import JobRecord, JobState, SqliteJobStore

__all__ = [
    "JobContext",
    "JobManager",
    "JobNotDone",
    "JobRecord",
    "JobState",
    "Jobs",
    "LocalCaller",
    "QueueFull",
    "ResultGone",
    "SqliteJobStore",
    "UnknownJob",
    "anonymise_job",
    "describe",
    "job_request",
    "output_name",
    "upload_path",
]
