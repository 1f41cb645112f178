"""Where to anonymise: detection boxes and segmentation masks become regions (a bounding
rectangle plus an alpha mask), and `apply_regions` blends a technique's output through them.

A region's alpha is 1 over everything that must be hidden; `feather` only adds a soft ramp
*outside* it, so a soft edge never uncovers what the detector found.
"""

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from anonymization_api.techniques import Technique, TechniqueOptions

Shape = Literal["box", "ellipse"]

# Named parts of a (scaled) detection box, as fractions x1, y1, x2, y2.
NAMED_PARTS: dict[str, tuple[float, float, float, float]] = {
    "full": (0.0, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.6),
    "eyes": (0.0, 0.2, 1.0, 0.55),
    "bottom": (0.0, 0.5, 1.0, 1.0),
}
# CenterFace boxes span brows to chin; faces are hidden with forehead and hair, so their boxes
# grow more upwards: the centre moves up by this share of the added height (0.1 h at scale 1.5).
FACE_CENTRE_SHIFT = 0.2
SEGMENT_MARGIN_PX = 2  # label maps are coarse at object edges; grow each mask by this much


@dataclass(frozen=True)
class RegionStyle:
    mask_scale: float = 1.0
    shape: Shape = "box"
    feather: float = 0.0
    part: tuple[float, float, float, float] = NAMED_PARTS["full"]
    shift_up: float = 0.0


@dataclass(frozen=True)
class Region:
    """Pixels x1:x2, y1:y2 of the image, and the alpha (h, w) float32 0..1 to blend with."""

    x1: int
    y1: int
    x2: int
    y2: int
    alpha: np.ndarray
    # Detection regions: the box (image pixels, not clipped) that the shape is drawn in.
    outline: tuple[int, int, int, int] | None = None
    solid: bool = False  # alpha is 1 everywhere: the hidden pixels replace the region's outright


def box_regions(dets: np.ndarray, style: RegionStyle, width: int, height: int) -> list[Region]:
    """Regions for detection rows x1, y1, x2, y2, ... in an image of `width` x `height`."""
    regions = []
    for x1, y1, x2, y2 in dets[:, :4].astype(np.float64):
        box_w, box_h = x2 - x1, y2 - y1
        if box_w <= 0 or box_h <= 0:
            continue
        shift = style.shift_up * (style.mask_scale - 1.0) * box_h
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2 - shift
        half_w, half_h = box_w * style.mask_scale / 2, box_h * style.mask_scale / 2
        left, top = centre_x - half_w, centre_y - half_h
        px1, py1, px2, py2 = style.part
        box = (left + px1 * 2 * half_w, top + py1 * 2 * half_h, left + px2 * 2 * half_w, top + py2 * 2 * half_h)
        region = _shaped(box, style, width, height)
        if region is not None:
            regions.append(region)
    return regions


def _shaped(box: tuple[float, ...], style: RegionStyle, width: int, height: int) -> Region | None:
    ramp = round(style.feather * 0.5 * min(box[2] - box[0], box[3] - box[1]))
    outline = (round(box[0]), round(box[1]), round(box[2]), round(box[3]))
    # The outline grown by the soft edge (alpha reaches 0 one pixel beyond it): with a hard edge the
    # region is the outline itself, so a box is solid and needs no blending.
    x1, y1 = max(0, outline[0] - ramp), max(0, outline[1] - ramp)
    x2, y2 = min(width, outline[2] + ramp), min(height, outline[3] + ramp)
    if x2 <= x1 or y2 <= y1:
        return None
    core = np.zeros((y2 - y1, x2 - x1), np.uint8)
    draw_shape(core, outline, style.shape, origin=(x1, y1))
    solid = ramp <= 0 and style.shape == "box"
    return Region(x1, y1, x2, y2, _feathered(core, ramp), outline=outline, solid=solid)


def draw_shape(canvas: np.ndarray, box: tuple[int, ...], shape: str, origin: tuple[int, int] = (0, 0)) -> None:
    """Set to 1 the pixels of `canvas` inside `shape` (`ellipse`, otherwise the box itself) inscribed
    in `box` (x1, y1, x2, y2 in image pixels, ends exclusive), where `canvas` starts at pixel
    `origin` (x, y) of the image. The service hides exactly these pixels and the evaluator counts
    exactly these, so both draw them here."""
    x1, y1, x2, y2 = box[0] - origin[0], box[1] - origin[1], box[2] - origin[0], box[3] - origin[1]
    if x2 <= x1 or y2 <= y1:
        return
    if shape == "ellipse":
        centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        axes = (max(1, (x2 - x1) // 2), max(1, (y2 - y1) // 2))
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, thickness=-1)
    else:
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), 1, thickness=-1)


def _feathered(core: np.ndarray, ramp: int) -> np.ndarray:
    """Alpha 1 on the core, falling linearly to 0 over `ramp` pixels outside it."""
    if ramp <= 0:
        return core.astype(np.float32)
    outside = cv2.distanceTransform((1 - core).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(1.0 - outside / (ramp + 1), 0.0, 1.0).astype(np.float32)


def mask_regions(mask: np.ndarray, style: RegionStyle) -> list[Region]:
    """Regions for a boolean (H, W) mask: one per connected part, each grown a little and feathered."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * SEGMENT_MARGIN_PX + 1,) * 2, np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    height, width = mask.shape
    regions = []
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        ramp = round(style.feather * 0.5 * min(w, h))
        x1, y1 = max(0, x - ramp), max(0, y - ramp)
        x2, y2 = min(width, x + w + ramp), min(height, y + h + ramp)
        core = (labels[y1:y2, x1:x2] == index).astype(np.uint8)
        regions.append(Region(x1, y1, x2, y2, _feathered(core, ramp)))
    return regions


def apply_regions(
    image: np.ndarray, regions: list[Region], technique: Technique, degree: float, options: TechniqueOptions
) -> None:
    """Anonymise each region of `image` (H, W, 3) uint8 RGB in place."""
    if degree <= 0:
        return
    for region in regions:
        view = image[region.y1 : region.y2, region.x1 : region.x2]
        hidden = technique(view, degree, options)
        if region.solid:  # a plain box: no blending, a third of the cost on a 1080p frame's faces
            view[...] = hidden
        else:
            view[...] = cv2.blendLinear(hidden, view, region.alpha, 1.0 - region.alpha)
