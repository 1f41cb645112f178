"""BMW's formats, which its clients and inference APIs speak: the answer envelope, the
`bounding-boxes` of a detection and the palette of a segmentation label map."""

from typing import Any

import numpy as np


def envelope(data: Any = None, error: str | None = None) -> dict[str, Any]:
    """BMW's answer envelope `{"data", "error", "success"}`, which its clients read; as BMW's,
    `error` is the empty string on success."""
    return {"data": data, "error": error or "", "success": error is None}


def gray_palette(size: int) -> list[int]:
    """PNG palette where class i is drawn as gray (i, i, i): BMW's anonymiser reads the class from
    the gray value while its box extraction reads the palette colour, and this palette serves both."""
    return [value for index in range(size) for value in (index, index, index)]


def to_bounding_boxes(rows: np.ndarray, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Detections (N, 6) x1, y1, x2, y2, score 0..1, class as BMW's `bounding-boxes`."""
    return [
        {
            "ObjectClassId": int(row[5]),
            "ObjectClassName": labels[int(row[5])],
            "confidence": round(float(row[4]) * 100, 2),
            "coordinates": {
                "left": round(float(row[0])),
                "top": round(float(row[1])),
                "right": round(float(row[2])),
                "bottom": round(float(row[3])),
            },
        }
        for row in rows
    ]


def from_bounding_boxes(boxes: list[dict[str, Any]], labels: tuple[str, ...]) -> np.ndarray:
    """BMW's `bounding-boxes` as detections (N, 6); the class found by name, else by id.
    Raises KeyError, TypeError or ValueError on an answer of another shape."""
    rows = []
    for box in boxes:
        name = box["ObjectClassName"]
        index = labels.index(name) if name in labels else int(box.get("ObjectClassId", -1))
        coords = box["coordinates"]
        rows.append([coords["left"], coords["top"], coords["right"], coords["bottom"], box["confidence"] / 100, index])
    return np.asarray(rows, np.float32).reshape(-1, 6)
