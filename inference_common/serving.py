"""The served-model contract: what a model declares (name, task, labels, request parameters) and
how its per-image results become the tensors of docs/architecture.md, "The model contract".

A detection model implements `detect(image, params) -> (N, 6)` rows of x1, y1, x2, y2, score,
class; a segmentation model implements `segment(image, params) -> (H, W)` class indices. The
servers (our OIP server, Triton's Python back end) only ever call `load` and `predict`.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from anonymizer_shared import wire
from anonymizer_shared.wire import NO_DETECTIONS, Task, pack_detections
from inference_common.errors import BadRequest

__all__ = ["NO_DETECTIONS", "DetectionModel", "ModelParams", "SegmentationModel", "ServedModel"]


class ModelParams(BaseModel):
    """Request parameters a model accepts; subclasses add fields with their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServedModel(ABC):
    name: ClassVar[str]
    task: ClassVar[Task]
    labels: ClassVar[tuple[str, ...]]
    params_type: ClassVar[type[ModelParams]] = ModelParams
    description: ClassVar[str] = ""
    engine_name: str = "opencv"  # what runs the network, set by `load` where an engine does

    @abstractmethod
    def load(self, models_dir: Path) -> None:
        """Read weights and build runtimes; called once before the first request."""

    @abstractmethod
    def predict(self, images: np.ndarray, params: ModelParams) -> dict[str, np.ndarray]:
        """Run on a batch (B, H, W, 3) uint8 RGB; returns the contract's output tensors by name."""

    # Named parameter sets (e.g. "strict", "balanced"); a request's `preset` parameter picks one, and
    # any parameter the request also gives overrides the preset's.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def parse_params(self, raw: dict[str, Any] | None) -> ModelParams:
        """Validate request parameters, naming each bad one and what it accepts."""
        raw = dict(raw or {})
        preset = raw.pop("preset", None)
        if preset is not None:
            if preset not in self.presets:
                raise BadRequest(f"model {self.name}: unknown preset '{preset}'; valid: {sorted(self.presets)}")
            raw = {**self.presets[preset], **raw}
        try:
            return self.params_type.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"parameter {'.'.join(map(str, err['loc'])) or '?'}: {err['msg']}" for err in exc.errors()
            )
            accepted = ", ".join(self.params_type.model_fields) or "none"
            raise BadRequest(f"model {self.name}: {problems} (accepted parameters: {accepted})") from exc

    def outputs(self) -> tuple[str, ...]:
        return wire.outputs_of(self.task)

    def output_metadata(self) -> list[dict[str, Any]]:
        shapes = wire.OUTPUT_SHAPES
        return [{"name": name, "datatype": shapes[name][0], "shape": shapes[name][1]} for name in self.outputs()]

    def parameter_defaults(self) -> dict[str, Any]:
        return self.params_type().model_dump()

    def triton_config(self, max_batch_size: int) -> dict[str, Any]:
        """The model configuration as Triton's `GET /v2/models/{m}/config` returns it."""
        triton_type = {"INT32": "TYPE_INT32", "FP32": "TYPE_FP32", "UINT8": "TYPE_UINT8"}
        return {
            "name": self.name,
            "platform": "",
            "backend": "openvino",
            "max_batch_size": max_batch_size,
            "input": [{"name": wire.INPUT_IMAGE, "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}],
            "output": [
                {"name": out["name"], "data_type": triton_type[out["datatype"]], "dims": out["shape"][1:]}
                for out in self.output_metadata()
            ],
            "parameters": wire.model_config_parameters(
                self.task, list(self.labels), self.parameter_defaults(), self.presets
            ),
        }


class DetectionModel(ServedModel):
    task = Task.DETECTION

    @abstractmethod
    def detect(self, image: np.ndarray, params: ModelParams) -> np.ndarray:
        """Detect in one RGB uint8 (H, W, 3) image; returns (N, 6) float32 x1, y1, x2, y2, score, class."""

    def predict(self, images: np.ndarray, params: ModelParams) -> dict[str, np.ndarray]:
        return pack_detections([self.detect(image, params) for image in images])


class SegmentationModel(ServedModel):
    task = Task.SEGMENTATION

    @abstractmethod
    def segment(self, image: np.ndarray, params: ModelParams) -> np.ndarray:
        """Label one RGB uint8 (H, W, 3) image; returns (H, W) uint8 class indices."""

    def predict(self, images: np.ndarray, params: ModelParams) -> dict[str, np.ndarray]:
        maps = [self.segment(image, params) for image in images]
        return {wire.OUTPUT_LABEL_MAP: np.stack(maps).astype(np.uint8)}
