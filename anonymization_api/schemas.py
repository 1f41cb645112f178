"""Pydantic models at the API's edges: the user configuration (BMW's file plus optional
extensions)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anonymization_api.regions import NAMED_PARTS
from inference_common.protocol import Task


def _casefold(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


class SensitiveInfo(BaseModel):
    """One entry of `sensitive_info`: what to find, and how to hide it."""

    model_config = ConfigDict(extra="forbid")

    class_name: str = Field(min_length=1, description="label to hide, e.g. face, license_plate, text")
    inference_type: Task = Field(description="detection or segmentation")
    anonymization_technique: str = Field(description="a technique listed by GET /available_methods")
    anonymization_degree: float = Field(ge=0.0, le=1.0, description="0 leaves pixels unchanged, 1 is irreversible")
    model_name: str | None = Field(None, description="optional where one model offers the class")
    url: str | None = Field(None, description="optional where one server offers the model")
    preset: str | None = Field(None, description="a named parameter set of the model, e.g. strict or balanced")
    model_parameters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="request parameters passed to the model as they are, e.g. {'scales': '1'}"
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

    _fold = field_validator("inference_type", "anonymization_technique", mode="before")(_casefold)

    @field_validator("region")
    @classmethod
    def _valid_part(cls, region: Any) -> Any:
        if isinstance(region, tuple):
            x1, y1, x2, y2 = region
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError("fractions must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        return region

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
