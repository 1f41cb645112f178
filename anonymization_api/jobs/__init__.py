"""Video jobs: records in a store (`store`, `redis_store`), their files (`files`), the one runtime
that runs their steps wherever they run (`runner`), the API's side of them (`manager`: ownership,
quotas, cancel, delete, results, the embedded pool), and the Celery mode (`celery_mode`, `leases`)."""

from anonymization_api.jobs.files import output_name, upload_path
from anonymization_api.jobs.manager import JobManager, Jobs, LocalCaller, describe
from anonymization_api.jobs.runner import JobContext, job_request
from anonymization_api.jobs.store import JobRecord, JobState, JobStore, SqliteJobStore

__all__ = [
    "JobContext",
    "JobManager",
    "JobRecord",
    "JobState",
    "JobStore",
    "Jobs",
    "LocalCaller",
    "SqliteJobStore",
    "describe",
    "job_request",
    "output_name",
    "upload_path",
]
