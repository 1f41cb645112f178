"""Anonymisation techniques: pure functions from a region's pixels to its hidden version.

A technique takes the region (h, w, 3) uint8 RGB, the degree 0..1 and the options, and returns the
fully anonymised region of the same shape; `regions.apply_regions` blends it in through the
region's mask.

Degree means at least the same on every region size: the detail kept shrinks geometrically from
the region's own size (degree 0: nothing changes) to a few pixels across at degree 1, which is
irreversible (no face detector finds a face, no text can be read). And it never hides less than
BMW's Anonymization API at the same degree: where BMW's formula keeps less (its pixelating keeps
1 / degree blocks a side, so one flat colour above 0.5; its blur is a Gaussian of 25 x degree px,
the same on any size, so it hides more of small regions), the detail kept is BMW's. `kept_sides`
is that one rule.

Adding a technique is one function and one registration:

    @register("swirl")
    def swirl(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
        ...
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TechniqueOptions:
    color: tuple[int, int, int] = (0, 0, 0)  # RGB, for `solid`


Technique = Callable[[np.ndarray, float, TechniqueOptions], np.ndarray]
TECHNIQUES: dict[str, Technique] = {}
# BMW's detail kept along a side of `side` px at `degree` (0 < degree <= 1), in pixels across.
SideDetail = Callable[[int, float], int]

BMW_BLUR_SIGMA_PER_DEGREE = 25.0  # BMW blurs with PIL's GaussianBlur(25 x degree): a standard deviation in px


def register(name: str) -> Callable[[Technique], Technique]:
    def add(function: Technique) -> Technique:
        TECHNIQUES[name] = function
        return function

    return add


def kept_detail(size: int, degree: float, at_full: float) -> int:
    """Our size-relative curve: pixels across kept on a region `size` px long, size at 0, `at_full` at 1."""
    return max(1, round(size ** (1.0 - degree) * at_full**degree))


def bmw_pixelating_blocks(side: int, degree: float) -> int:
    """BMW shrinks a box to int(w / (degree * w)) x int(h / (degree * h)) px and enlarges it again:
    1 / degree blocks a side, rounded down in its float arithmetic (9 or 10 at 0.1, by size)."""
    return max(1, int(side / (degree * side)))


def bmw_blur_detail(sigma_per_shrink: float) -> SideDetail:
    """BMW's Gaussian blur of 25 x degree px as the detail our resampling keeps: shrinking a side
    by a factor s and filtering there hides at least as much as a Gaussian of `sigma_per_shrink` x s px
    (each technique's factor measured against PIL's GaussianBlur on faces, with a margin)."""

    def detail(side: int, degree: float) -> int:
        return max(1, math.floor(side * sigma_per_shrink / (BMW_BLUR_SIGMA_PER_DEGREE * degree)))

    return detail


def kept_sides(width: int, height: int, degree: float, at_full: float, bmw: SideDetail) -> tuple[int, int]:
    """Pixels kept across each side at 0 < degree <= 1: the fewer (the stronger hiding) of our
    size-relative curve, which keeps the region's shape, and BMW's formula for the same degree."""
    scale = kept_detail(max(width, height), degree, at_full) / max(width, height)
    return (
        max(1, min(round(width * scale), bmw(width, degree))),
        max(1, min(round(height * scale), bmw(height, degree))),
    )


def _resample(
    region: np.ndarray, degree: float, at_full: float, bmw: SideDetail, filter_small, upscale: int
) -> np.ndarray:
    """Shrink the region to its kept detail, filter it there, and bring it back to its size."""
    height, width = region.shape[:2]
    if degree <= 0:
        return region
    small_size = kept_sides(width, height, degree, at_full, bmw)
    if small_size[0] >= width and small_size[1] >= height:
        return region  # a region already as small as the detail kept
    small = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
    if filter_small is not None:
        small = filter_small(small)
    return cv2.resize(small, (width, height), interpolation=upscale)


@register("pixelating")
def pixelate(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Blocks, each the mean colour of the pixels it covers; at most 1 / degree a side (BMW's), so
    one flat colour above degree 0.5."""
    return _resample(region, degree, 5, bmw_pixelating_blocks, None, cv2.INTER_NEAREST_EXACT)


@register("gaussian_blur")
def gaussian_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Smooth blur; at degree 1 the detail of a 6 px image, or less (BMW's 25 px Gaussian)."""
    return _resample(
        region, degree, 6, bmw_blur_detail(0.65), lambda small: cv2.GaussianBlur(small, (0, 0), 0.8), cv2.INTER_CUBIC
    )


register("blurring")(gaussian_blur)  # BMW's name


@register("box_blur")
def box_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Averaging blur; at degree 1 the detail of a 6 px image, or less (BMW's 25 px Gaussian)."""
    return _resample(region, degree, 6, bmw_blur_detail(0.9), lambda small: cv2.blur(small, (3, 3)), cv2.INTER_LINEAR)


@register("median_blur")
def median_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Median filter, which flattens textures into patches; at degree 1 the detail of a 10 px image,
    or less (BMW's 25 px Gaussian)."""
    return _resample(region, degree, 10, bmw_blur_detail(0.7), lambda small: cv2.medianBlur(small, 3), cv2.INTER_LINEAR)


@register("bilateral_blur")
def bilateral_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Edge-preserving smoothing; at degree 1 the detail of a 10 px image, or less (BMW's 25 px Gaussian)."""
    return _resample(
        region,
        degree,
        10,
        bmw_blur_detail(0.4),
        lambda small: cv2.bilateralFilter(small, 5, 60, 5),
        cv2.INTER_CUBIC,
    )


@register("blackening")
def blacken(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Fade to black: degree 1 is black (BMW's behaviour)."""
    return (region.astype(np.float32) * (1.0 - degree)).round().astype(np.uint8)


@register("solid")
def solid(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Fade to the options' colour: degree 1 is that colour."""
    color = np.asarray(options.color, np.float32)
    mixed = region.astype(np.float32) * (1.0 - degree) + color * degree
    return mixed.round().clip(0, 255).astype(np.uint8)
