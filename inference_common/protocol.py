"""Tensor names and datatypes of the model contract (DESIGN.md section 3), shared by every server
and client so that none of them spells a name twice."""

from enum import StrEnum
from typing import Any

import numpy as np

INPUT_IMAGE = "IMAGE"
OUTPUT_NUM_DETS = "num_dets"
OUTPUT_BOXES = "det_boxes"
OUTPUT_SCORES = "det_scores"
OUTPUT_CLASSES = "det_classes"
OUTPUT_LABEL_MAP = "label_map"

DETECTION_OUTPUTS = (OUTPUT_NUM_DETS, OUTPUT_BOXES, OUTPUT_SCORES, OUTPUT_CLASSES)
SEGMENTATION_OUTPUTS = (OUTPUT_LABEL_MAP,)

# The Open Inference Protocol's datatype names and their numpy equivalents.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype name for a numpy array."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy {array.dtype}")


class Task(StrEnum):
    DETECTION = "detection"
    SEGMENTATION = "segmentation"


def outputs_of(task: Task) -> tuple[str, ...]:
    return DETECTION_OUTPUTS if task is Task.DETECTION else SEGMENTATION_OUTPUTS


def envelope(data: Any = None, error: str | None = None) -> dict[str, Any]:
    """BMW's answer envelope `{"data", "error", "success"}`, which its clients read."""
    return {"data": data, "error": error, "success": error is None}
