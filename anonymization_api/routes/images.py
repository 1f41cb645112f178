"""POST /anonymize: an image and a configuration in, the anonymised image (or its audit) out."""

import asyncio
import base64

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from anonymization_api.auth import CallerDep
from anonymization_api.configuration import Plan, parse_configuration, plan
from anonymization_api.deps import (
    FormDep,
    MetricsDep,
    RegistryDep,
    RouterDep,
    SettingsDep,
    form_bytes,
    form_size,
    form_text,
    read_configuration,
)
from anonymization_api.errors import InvalidRequest
from anonymization_api.inference import InferenceRouter
from anonymization_api.media.images import OutputFormat, encode_image
from anonymization_api.metrics import ApiMetrics
from anonymization_api.pipelines.image import anonymise, audit, localise
from anonymization_api.routes import (
    BINARY,
    CONFIGURATION_FIELD,
    DETECTION_SIZE_FIELD,
    multipart_doc,
    route,
    warning_header,
)
from anonymization_api.schemas import Envelope, ImageAudit
from anonymization_api.settings import ApiSettings
from anonymizer_shared.bmw import envelope
from anonymizer_shared.images import image_pixels, read_image
from anonymizer_shared.memory import LARGE_IMAGE_PIXELS, trim
from anonymizer_shared.stages import stage

router = APIRouter(tags=["images"])

DETECTION_MODES = ("none", "only", "include")

FORM_DOC = multipart_doc(
    ["image", "configuration"],
    {
        "image": BINARY,
        "configuration": CONFIGURATION_FIELD,
        "output_format": {"type": "string", "enum": [f.value for f in OutputFormat]},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100},
        "detections": {"type": "string", "enum": list(DETECTION_MODES)},
        "detection_size": DETECTION_SIZE_FIELD,
    },
)


def _quality(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest(f"quality '{raw}' must be a whole number from 1 to 100")
    return int(raw)


@route(
    router,
    "POST",
    "/anonymize",
    summary="Anonymise an image",
    openapi_extra=FORM_DOC,
    response_class=Response,
    responses={
        200: {
            "model": Envelope[ImageAudit],  # with detections=only or include
            "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
        }
    },
)
async def anonymize(
    form: FormDep,
    settings: SettingsDep,
    registry: RegistryDep,
    router: RouterDep,
    caller: CallerDep,
    metrics: MetricsDep,
    request: Request,
) -> Response:
    image_bytes = await form_bytes(
        form, "image", "send the picture as the multipart file 'image'", settings.max_upload_bytes
    )
    config_bytes = await read_configuration(form)
    mode = form_text(form, "detections") or "none"
    if mode not in DETECTION_MODES:
        raise InvalidRequest(f"detections '{mode}' is not one of {list(DETECTION_MODES)}")
    quality = _quality(form_text(form, "quality"), settings.jpeg_quality)
    detection_size = form_size(form, "detection_size")
    content = parse_configuration(config_bytes, settings.max_configuration_entries)
    the_plan = plan(content, registry, settings.default_models, photo=True)  # every problem, before any inference
    requested_format = form_text(form, "output_format")
    # the costly part: bounded, then 503
    pixels = image_pixels(image_bytes)  # from the header: what decoding it will cost
    async with request.app.state.admission.admit(caller.key_id, pixels):
        try:
            with metrics.anonymize_in_flight.track_inprogress():
                return await _anonymise(
                    image_bytes, the_plan, router, metrics, settings, requested_format, mode, quality, detection_size
                )
        finally:
            if pixels >= LARGE_IMAGE_PIXELS:  # its arrays are freed by now: give their pages back
                await asyncio.to_thread(trim)


async def _anonymise(
    image_bytes: bytes,
    the_plan: Plan,
    router: InferenceRouter,
    metrics: ApiMetrics,
    settings: ApiSettings,
    requested_format: str | None,
    mode: str,
    quality: int,
    detection_size: tuple[int, int] | None,
) -> Response:
    with stage("decode"):
        image, input_format = await asyncio.to_thread(read_image, image_bytes, settings.max_image_pixels)
    output_format = OutputFormat.choose(input_format, requested_format)
    with stage("detect"):
        results = await localise(the_plan, [image], router, detection_size)
    height, width = image.shape[:2]
    headers = warning_header(the_plan.warnings)
    if mode == "only":  # no image goes back: its pixels are not touched
        with stage("audit"):
            found = await asyncio.to_thread(audit, the_plan, results, 0, width, height)
    else:
        with stage("hide"):
            anonymised, found = await asyncio.to_thread(anonymise, image, the_plan, results, 0, True)
    metrics.count_hidden((entry.class_name, len(entry.regions)) for entry in found)
    answer = ImageAudit(width=width, height=height, detections=found, warnings=the_plan.warnings or None)
    if mode == "only":
        return JSONResponse(envelope(answer.model_dump(exclude_none=True)), headers=headers)
    with stage("encode"):
        encoded = await asyncio.to_thread(encode_image, anonymised, output_format, quality)
    if mode == "include":
        with stage("answer"):
            answer.media_type, answer.image = output_format.media_type, base64.b64encode(encoded).decode()
            return JSONResponse(envelope(answer.model_dump(exclude_none=True)), headers=headers)
    return Response(encoded, media_type=output_format.media_type, headers=headers)
