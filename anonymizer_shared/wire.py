"""The wire contract between the API and the inference servers (docs/architecture.md, "The model contract"): tensor
names and datatypes, the packing of detections and label maps, the protocol's own request
parameters and the model-configuration parameters that declare a model's task and labels.

Both sides import this module, so no tensor name or layout is spelled twice.
"""

import json
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

# Triton's binary tensor extension: the length of the JSON part that precedes the binary tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"
# Request parameters the protocol itself defines; everything else is the model's.
PROTOCOL_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)

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

# Every output tensor of the contract: datatype and shape, batch first (-1: any size).
OUTPUT_SHAPES: dict[str, tuple[str, list[int]]] = {
    OUTPUT_NUM_DETS: ("INT32", [-1, 1]),
    OUTPUT_BOXES: ("FP32", [-1, -1, 4]),
    OUTPUT_SCORES: ("FP32", [-1, -1]),
    OUTPUT_CLASSES: ("INT32", [-1, -1]),
    OUTPUT_LABEL_MAP: ("UINT8", [-1, -1, -1]),
}

NO_DETECTIONS = np.empty((0, 6), np.float32)


class Task(StrEnum):
    DETECTION = "detection"
    SEGMENTATION = "segmentation"


class ContractViolation(ValueError):
    """An answer that does not follow the contract: its sender is not to be believed."""


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype name for a numpy array."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy {array.dtype}")


def outputs_of(task: Task) -> tuple[str, ...]:
    return DETECTION_OUTPUTS if task is Task.DETECTION else SEGMENTATION_OUTPUTS


# --- detections and label maps -------------------------------------------------------------------


def pack_detections(per_image: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Pack per-image (N, 6) detections into the EfficientNMS tensors, padded to the largest N."""
    batch = len(per_image)
    width = max(1, *(len(dets) for dets in per_image)) if per_image else 1
    num = np.zeros((batch, 1), np.int32)
    boxes = np.zeros((batch, width, 4), np.float32)
    scores = np.zeros((batch, width), np.float32)
    classes = np.zeros((batch, width), np.int32)
    for index, dets in enumerate(per_image):
        count = len(dets)
        num[index, 0] = count
        boxes[index, :count] = dets[:, :4]
        scores[index, :count] = dets[:, 4]
        classes[index, :count] = dets[:, 5]
    return {OUTPUT_NUM_DETS: num, OUTPUT_BOXES: boxes, OUTPUT_SCORES: scores, OUTPUT_CLASSES: classes}


def unpack_detections(
    outputs: dict[str, np.ndarray], batch: int | None = None, classes: int | None = None
) -> list[np.ndarray]:
    """The inverse of `pack_detections`: per-image (N, 6) float32 x1, y1, x2, y2, score, class.

    With `batch` and `classes` the answer is checked against what was asked: one result per image
    sent, counts within the tensors, finite values, class indices within the model's labels;
    `ContractViolation` names what is wrong."""
    try:
        num, boxes = outputs[OUTPUT_NUM_DETS], outputs[OUTPUT_BOXES]
        scores, labels = outputs[OUTPUT_SCORES], outputs[OUTPUT_CLASSES]
    except KeyError as exc:
        raise ContractViolation(f"the answer lacks the output {exc}") from None
    size = len(num)
    if (
        num.ndim != 2
        or num.shape[1] != 1
        or boxes.ndim != 3
        or boxes.shape[::2] != (size, 4)
        or scores.shape != boxes.shape[:2]
        or labels.shape != boxes.shape[:2]
    ):
        raise ContractViolation(
            f"detection outputs of shapes {num.shape}, {boxes.shape}, {scores.shape}, {labels.shape} "
            "are not [B, 1], [B, K, 4], [B, K], [B, K]"
        )
    if batch is not None and size != batch:
        raise ContractViolation(f"{size} detection results for {batch} images")
    counts = num[:, 0].astype(np.int64)
    if counts.size and (counts.min() < 0 or counts.max() > boxes.shape[1]):
        raise ContractViolation(f"num_dets {counts.tolist()} outside 0..{boxes.shape[1]}")
    result = []
    for index, count in enumerate(counts):
        rows = np.concatenate(
            [
                boxes[index, :count].astype(np.float32),
                scores[index, :count, None].astype(np.float32),
                labels[index, :count, None].astype(np.float32),
            ],
            axis=1,
        )
        result.append(rows)
    if classes is not None:
        check_detections(result, classes)
    return result


def check_detections(per_image: list[np.ndarray], classes: int) -> None:
    """Raise `ContractViolation` unless every row has finite values and a class in 0..classes-1."""
    for rows in per_image:
        if not rows.size:
            continue
        if not np.isfinite(rows).all():
            raise ContractViolation("detections with values that are not finite numbers")
        indices = rows[:, 5]
        if indices.min() < 0 or indices.max() >= classes or not np.array_equal(indices, np.round(indices)):
            raise ContractViolation(f"detection class indices outside 0..{classes - 1}")


def check_boxes(per_image: list[np.ndarray], width: int, height: int) -> None:
    """Raise `ContractViolation` unless every box is finite and in the pixels of the `width` x `height`
    image sent. A box may reach past an edge (a face cut by the frame), never by more than the image's
    own size: a coordinate like 3e38 is no detection, and would break the arithmetic that draws it."""
    for rows in per_image:
        if not rows.size:
            continue
        boxes = rows[:, :4]
        if not np.isfinite(boxes).all():
            raise ContractViolation("detection boxes with values that are not finite numbers")
        xs, ys = boxes[:, 0::2], boxes[:, 1::2]
        if xs.min() < -width or xs.max() > 2 * width or ys.min() < -height or ys.max() > 2 * height:
            raise ContractViolation(
                f"detection boxes up to ({xs.min():.3g}..{xs.max():.3g}, {ys.min():.3g}..{ys.max():.3g}) for an "
                f"image of {width}x{height}: boxes are in the pixels of the image sent"
            )


def check_label_maps(label_maps: np.ndarray, images_shape: tuple[int, ...], classes: int) -> list[np.ndarray]:
    """Per-image (H, W) uint8 class indices from a `label_map` output, checked against the images
    (B, H, W, ...) sent and the model's number of labels."""
    if label_maps.dtype != np.uint8 or label_maps.shape != tuple(images_shape[:3]):
        raise ContractViolation(
            f"label_map of {label_maps.dtype} {label_maps.shape} for images of shape {tuple(images_shape)}; "
            "expected UINT8 [B, H, W] of the images' size"
        )
    if label_maps.size and int(label_maps.max()) >= classes:
        raise ContractViolation(f"label_map classes up to {int(label_maps.max())} for a model of {classes} labels")
    return list(label_maps)


# --- model configuration -------------------------------------------------------------------------


def config_parameter(parameters: dict[str, Any], key: str) -> Any:
    """A model-configuration parameter in Triton's `{"string_value": ...}` form or given plainly."""
    value = parameters.get(key)
    if isinstance(value, dict):
        value = value.get("string_value")
    return value


def json_config_parameter(parameters: dict[str, Any], key: str) -> Any:
    """A parameter that holds JSON (labels, defaults, presets), decoded; None where absent."""
    value = config_parameter(parameters, key)
    return json.loads(value) if isinstance(value, str) else value


def model_config_parameters(task: Task, labels: list[str], defaults: dict, presets: dict) -> dict[str, Any]:
    """The `parameters` of a model configuration that declare what a model is, as Triton writes them."""
    return {
        "task": {"string_value": task.value},
        "labels": {"string_value": json.dumps(labels)},
        "defaults": {"string_value": json.dumps(defaults)},
        "presets": {"string_value": json.dumps(presets)},
    }
