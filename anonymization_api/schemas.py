"""Pydantic models at the API's edges: the user configuration (BMW's file plus optional
extensions) and every JSON answer (BMW's envelope around the audit, jobs, servers)."""

import math
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anonymization_api.regions import NAMED_PARTS
from anonymizer_shared.wire import Task

T = TypeVar("T")

PixelBox = tuple[float, float, float, float]
ParameterName = Annotated[str, Field(max_length=64)]
ParameterValue = Annotated[str, Field(max_length=256)] | int | float | bool
MAX_MANUAL_BOXES = 256
MAX_COORDINATE = 100_000


class Envelope(BaseModel, Generic[T]):
    """BMW's answer envelope, which its clients read: `data`, `error` (empty on success), `success`."""

    data: T | None = None
    error: str = ""
    success: bool = True


def _casefold(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


class SensitiveInfo(BaseModel):
    """One entry of `sensitive_info`: what to find, and how to hide it. Fields it does not know are
    ignored, as BMW's API ignores them, and reported as warnings (see `configuration.plan`)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    class_name: str = Field(min_length=1, max_length=256, description="label to hide, e.g. face, license_plate, text")
    inference_type: Task = Field(description="detection or segmentation")
    anonymization_technique: str = Field(max_length=64, description="a technique listed by GET /available_methods")
    anonymization_degree: float = Field(ge=0.0, le=1.0, description="0 leaves pixels unchanged, 1 is irreversible")
    model_name: str | None = Field(None, max_length=256, description="optional where one model offers the class")
    url: str | None = Field(None, max_length=2048, description="optional where one server offers the model")
    preset: str | None = Field(
        None, max_length=64, description="a named parameter set of the model, e.g. strict or balanced"
    )
    model_parameters: dict[
        Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)] | int | float | bool
    ] = Field(
        default_factory=dict,
        max_length=32,
        description="request parameters passed to the model as they are, e.g. {'scales': '1'}",
    )
    score_threshold: float | None = Field(None, ge=0.0, le=1.0, description="minimum detection score")
    mask_scale: float | None = Field(
        None, ge=0.5, le=4.0, description="box enlargement; default 1.5 for faces (forehead and hair), 1.15 others"
    )
    shape: Literal["box", "ellipse"] = Field("box", description="shape hidden inside each detection box")
    feather: float = Field(0.0, ge=0.0, le=1.0, description="soft edge outside the region, as a share of its size")
    region: Literal["full", "top", "eyes", "bottom"] | tuple[float, float, float, float] = Field(
        "full", description="part of each box to hide: a name or x1, y1, x2, y2 fractions of the box"
    )
    color: tuple[int, int, int] | str = Field((0, 0, 0), description="RGB or #rrggbb, for the solid technique")
    keep: list[PixelBox] = Field(
        default_factory=list,
        max_length=MAX_MANUAL_BOXES,
        description="boxes [x1, y1, x2, y2] in image pixels to keep visible: a detection whose centre lies in one "
        "is not hidden (a consenting person, a company's own logo); for segmentation, the mask inside them is left",
    )
    hide: list[PixelBox] = Field(
        default_factory=list,
        max_length=MAX_MANUAL_BOXES,
        description="boxes [x1, y1, x2, y2] in image pixels to hide with this entry's technique whatever the model "
        "found (what the detector missed)",
    )

    _fold = field_validator("inference_type", "anonymization_technique", mode="before")(_casefold)

    @field_validator("region")
    @classmethod
    def _valid_part(cls, region: Any) -> Any:
        if isinstance(region, tuple):
            x1, y1, x2, y2 = region
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError("fractions must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        return region

    @field_validator("keep", "hide")
    @classmethod
    def _valid_boxes(cls, boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
        for x1, y1, x2, y2 in boxes:
            if not all(math.isfinite(v) and 0 <= v <= MAX_COORDINATE for v in (x1, y1, x2, y2)):
                raise ValueError(f"box coordinates must be pixels from 0 to {MAX_COORDINATE}")
            if not (x1 < x2 and y1 < y2):
                raise ValueError("a box is [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        return boxes

    @field_validator("color")
    @classmethod
    def _valid_color(cls, color: Any) -> tuple[int, int, int]:
        if isinstance(color, str):
            text = color.removeprefix("#")
            if len(text) != 6:
                raise ValueError("a colour string must look like #rrggbb")
            try:
                color = tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))
            except ValueError:
                raise ValueError("a colour string must look like #rrggbb") from None
        if not all(0 <= channel <= 255 for channel in color):
            raise ValueError("colour channels must lie in 0..255")
        return color

    def part(self) -> tuple[float, float, float, float]:
        return NAMED_PARTS[self.region] if isinstance(self.region, str) else self.region


# --- answers -------------------------------------------------------------------------------------


class RegionAudit(BaseModel):
    """One region hidden: a detection (`box`, `score`, the `outline` its shape was drawn in) or a
    segmentation region (`pixels` fully hidden); `hidden` is the pixel rectangle that changed."""

    box: list[float] = Field(description="x1, y1, x2, y2 as the model found it")
    hidden: list[list[int]] = Field(description="pixel rectangles changed, cut at the image's edges")
    shape: Literal["box", "ellipse", "mask"]
    score: float | None = None
    outline: list[list[int]] | None = Field(None, description="the rectangle each shape was drawn in, not cut")
    pixels: int | None = Field(None, description="pixels of a segmentation region fully hidden")
    source: Literal["hide"] | None = Field(None, description="'hide' for a box the configuration asked to hide")


class EntryAudit(BaseModel):
    entry: int
    class_name: str
    model_name: str
    preset: str | None = Field(None, description="the model's parameter set the entry ran with (photo: a photo's)")
    technique: str
    regions: list[RegionAudit]
    kept: list[RegionAudit] | None = Field(None, description="detections left visible by the entry's keep boxes")


class ImageAudit(BaseModel):
    """What `/anonymize` hid in an image (`detections=only`), and the image itself (`include`)."""

    width: int
    height: int
    detections: list[EntryAudit]
    media_type: str | None = None
    image: str | None = Field(None, description="the anonymised image, base64")
    warnings: list[str] | None = Field(None, description="what of the configuration was ignored, e.g. unknown fields")


class ModelDescription(BaseModel):
    task: Task
    labels: list[str]


class ServerDescription(BaseModel):
    url: str
    protocol: Literal["oip", "bmw"] | None
    available: bool
    error: str | None
    models: dict[str, ModelDescription]


class UrlList(BaseModel):
    urls: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    available: int = Field(description="registered inference servers that answer")
    unavailable: int = Field(description="registered inference servers that do not, or are not trusted")
    servers: dict[str, bool] = Field(description="each server's address and availability: for admins only")


Side = Annotated[int, Field(ge=32, le=16384)]


# Whole video frames are detected this far apart (every 4th frame at 30 fps), the frames between in
# windows around what they found (pipelines.key_frames); bench.key_frames measures what it keeps.
KEY_FRAME_SECONDS = 0.125
# A tracked region stays hidden this long after its object was last found (covers missed detections).
HOLD_SECONDS = 0.5


class VideoChoices(BaseModel):
    """What a client chooses for a video job (the form's fields). A job record carries these and
    nothing of the service's own settings, and the process running the job checks them again."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    keep_audio: bool = True
    tracking: bool = True
    hold_seconds: float = Field(HOLD_SECONDS, ge=0, le=5)
    detection_interval: int = Field(1, ge=1, le=10)
    key_frame_seconds: float = Field(KEY_FRAME_SECONDS, ge=0, le=1)
    detection_size: tuple[Side, Side] | None = None

    @model_validator(mode="after")
    def _interval_needs_tracking(self) -> "VideoChoices":
        if self.detection_interval > 1 and not self.tracking:
            raise ValueError("detection_interval above 1 needs tracking: frames between detections are tracked")
        return self


class JobDetections(BaseModel):
    entry: int
    frames: int = Field(description="frames in which the entry hid something")
    regions: int = Field(description="regions it hid in all")


class JobDescription(BaseModel):
    id: str
    name: str
    state: Literal["queued", "running", "done", "failed", "cancelled", "deleted"]
    frames_done: int
    frames_total: int
    fps: float | None
    eta_seconds: float | None
    detections: list[JobDetections]
    error: str | None
    created: str
    finished: str | None
    output: str | None = Field(description="the result's file name in anonymized_videos/, once done")
    result_url: str | None
    status_url: str
