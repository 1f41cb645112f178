"""Video endpoints: POST /jobs starts a job and /jobs reports, serves and cancels them; POST
/anonymize_video runs the same work and answers as BMW's API did, once the file is written."""

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import FormData, UploadFile

from anonymization_api.configuration import parse_configuration, plan
from anonymization_api.deps import (
    FormDep,
    RegistryDep,
    SettingsDep,
    form_size,
    form_text,
    read_configuration,
)
from anonymization_api.errors import InvalidRequest, PayloadTooLarge
from anonymization_api.jobs import JobRecord, Jobs, JobState, LocalCaller, describe, job_request, upload_path
from anonymization_api.jobs.manager import Caller
from anonymization_api.jobs.runner import video_limits
from anonymization_api.media.video import probe
from anonymization_api.registry import Registry
from anonymization_api.routes import (
    BINARY,
    CONFIGURATION_FIELD,
    DETECTION_SIZE_FIELD,
    multipart_doc,
    route,
    warning_header,
)
from anonymization_api.schemas import Envelope, JobDescription, VideoChoices
from anonymization_api.settings import ApiSettings
from anonymizer_shared.bmw import envelope

router = APIRouter(tags=["videos"])

# The form's fields state VideoChoices' own types, defaults and bounds: one place for each.
CHOICES = VideoChoices.model_json_schema()["properties"]
CHOICE_FIELDS = ("keep_audio", "tracking", "hold_seconds", "detection_interval", "key_frame_seconds")
JOB_FIELDS = {
    "video": BINARY,
    "configuration": CONFIGURATION_FIELD,
    **{
        name: {key: CHOICES[name][key] for key in ("type", "default", "minimum", "maximum") if key in CHOICES[name]}
        for name in CHOICE_FIELDS
    },
    "detection_size": DETECTION_SIZE_FIELD,
}
JOB_FORM_DOC = multipart_doc(["video", "configuration"], JOB_FIELDS)
BMW_FORM_DOC = multipart_doc(
    ["video", "configuration"],
    {**JOB_FIELDS, "wait": {"type": "boolean", "default": True, "description": "false: answer at once with the job"}},
)


def _jobs(request: Request) -> Jobs:
    return request.app.state.jobs


def _caller(request: Request) -> Caller:
    """Who is asking: set by the API-key check; without keys (loopback only) everyone is an admin."""
    return getattr(request.state, "caller", None) or LocalCaller()


def _flag(form, name: str, default: bool | None = None) -> bool:
    """A true/false form field; absent: `default`, else the VideoChoices field's default."""
    raw = form_text(form, name)
    if raw is None:
        return CHOICES[name]["default"] if default is None else default
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidRequest(f"{name} '{raw}' must be true or false")
    return value in ("true", "1", "yes")


def _interval(form, tracking: bool) -> int:
    raw, field = form_text(form, "detection_interval"), CHOICES["detection_interval"]
    if raw is None:
        return field["default"]
    if not raw.isdigit() or not field["minimum"] <= int(raw) <= field["maximum"]:
        raise InvalidRequest(
            f"detection_interval '{raw}' must be a whole number from {field['minimum']} to {field['maximum']}"
        )
    if int(raw) > 1 and not tracking:
        raise InvalidRequest("detection_interval above 1 needs tracking: frames between detections are tracked")
    return int(raw)


def _seconds(form, name: str) -> float:
    raw, default, most = form_text(form, name), CHOICES[name]["default"], CHOICES[name]["maximum"]
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        raise InvalidRequest(f"{name} '{raw}' must be a number of seconds from 0 to {most:g}") from None
    if not 0 <= value <= most:  # also refuses nan
        raise InvalidRequest(f"{name} {value} must lie between 0 and {most:g}")
    return value


async def _save_upload(upload: UploadFile, settings: ApiSettings) -> Path:
    target = upload_path(settings.data_dir, upload.filename)
    limit, size = settings.max_video_bytes, 0
    try:
        with target.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the video is larger than the limit of {limit} bytes")
                await asyncio.to_thread(out.write, chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


async def _submit(
    request: Request, form: FormData, settings: ApiSettings, registry: Registry
) -> tuple[JobRecord, dict[str, str]]:
    """Validate the form, save the upload and queue its job; nothing stays on disk if that fails."""
    upload = form.get("video")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("the form field 'video' is missing; send the video as the multipart file 'video'")
    configuration = (await read_configuration(form)).decode("utf-8", errors="replace")
    # every problem reported now, not when the job runs
    content = parse_configuration(configuration, settings.max_configuration_entries)
    warnings = warning_header(plan(content, registry, settings.default_models).warnings)
    tracking = _flag(form, "tracking")
    choices = VideoChoices(
        keep_audio=_flag(form, "keep_audio"),
        tracking=tracking,
        hold_seconds=_seconds(form, "hold_seconds"),
        detection_interval=_interval(form, tracking),
        key_frame_seconds=_seconds(form, "key_frame_seconds"),
        detection_size=form_size(form, "detection_size"),
    )
    jobs, caller = _jobs(request), _caller(request)
    await jobs.check_capacity(caller)
    source = await _save_upload(upload, settings)
    try:
        await asyncio.to_thread(probe, source, video_limits(settings))
        what = job_request(configuration, choices)
        return await jobs.submit(caller, upload.filename or "video", source, what), warnings
    except BaseException:
        source.unlink(missing_ok=True)
        raise


def _accepted(record: JobRecord, headers: dict[str, str]) -> JSONResponse:
    described = describe(record)
    headers = {**headers, "Location": described.status_url}
    return JSONResponse(envelope(described.model_dump()), status_code=202, headers=headers)


@route(
    router,
    "POST",
    "/jobs",
    summary="Anonymise a video as a job: 202 at once, progress at /jobs/{id}, the result at /jobs/{id}/result",
    openapi_extra=JOB_FORM_DOC,
    status_code=202,
    response_model=Envelope[JobDescription],
)
async def create_job(request: Request, form: FormDep, settings: SettingsDep, registry: RegistryDep) -> JSONResponse:
    return _accepted(*await _submit(request, form, settings, registry))


@route(
    router,
    "POST",
    "/anonymize_video",
    summary='Anonymise a video as BMW\'s API does: the answer "Done" comes once the file is written to '
    "anonymized_videos/Anonymized_<name>_<dd_mm_yy_HH_MM_SS>.mp4; wait=false answers at once, as POST /jobs",
    openapi_extra=BMW_FORM_DOC,
    responses={
        200: {"content": {"application/json": {"schema": {"type": "string", "example": "Done"}}}},
        202: {"model": Envelope[JobDescription], "description": "with wait=false: the job, as POST /jobs"},
    },
)
async def anonymize_video(
    request: Request, form: FormDep, settings: SettingsDep, registry: RegistryDep
) -> JSONResponse:
    wait = _flag(form, "wait", True)
    job, warnings = await _submit(request, form, settings, registry)
    if not wait:
        return _accepted(job, warnings)
    job = await _jobs(request).wait(job.id)
    if job.state is JobState.DONE:
        return JSONResponse("Done", headers=warnings)
    status = job.error_status or 500 if job.state is JobState.FAILED else 409
    return JSONResponse(
        envelope(describe(job).model_dump(), job.error or f"the job was {job.state.value}"), status_code=status
    )


@route(
    router,
    "GET",
    "/jobs",
    summary="Your video jobs (every job, for an admin) with their state and progress",
    response_model=Envelope[list[JobDescription]],
)
async def list_jobs(request: Request) -> dict[str, Any]:
    return envelope([describe(job).model_dump() for job in await _jobs(request).list(_caller(request))])


@route(
    router,
    "GET",
    "/jobs/{job_id}",
    summary="One job: state, frames done and total, fps, ETA, error",
    response_model=Envelope[JobDescription],
)
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return envelope(describe(await _jobs(request).get(_caller(request), job_id)))


@route(
    router,
    "GET",
    "/jobs/{job_id}/result",
    summary="Download the anonymised video (HTTP range requests work); 410 once the file is gone",
)
async def job_result(request: Request, job_id: str) -> FileResponse:
    path = await _jobs(request).result(_caller(request), job_id)
    return FileResponse(path, media_type="video/mp4", filename=path.name)


@route(
    router,
    "DELETE",
    "/jobs/{job_id}",
    summary="Cancel a queued or running job (its upload and partial output are removed), or delete a "
    "finished job's result file (its state becomes deleted)",
    response_model=Envelope[JobDescription],
)
async def delete_job(request: Request, job_id: str) -> dict[str, Any]:
    return envelope(describe(await _jobs(request).delete(_caller(request), job_id)).model_dump())
