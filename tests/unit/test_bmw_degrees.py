"""At every degree and region size ours hides at least as much as BMW's Anonymization API.

BMW's formulas, read from its source (src/main/anonymization/detection_anonymization.py and
segmentation_anonymization.py) and computed with PIL as BMW does in `tests/support/bmw.py`:

- pixelating: the box (w x h) shrunk with PIL's bilinear filter to int(w / (degree * w)) x
  int(h / (degree * h)) px, then enlarged with nearest neighbours: 1 / degree blocks a side,
  rounded down in float arithmetic (0.1: 9 or 10 by size, 0.2: 4 or 5, 0.3: 3, 0.5: 2, above 0.5:
  one flat colour). Degree 0 divides by zero in BMW.
- blurring: PIL's ImageFilter.GaussianBlur(25 * degree), whose radius is the standard deviation
  in pixels, the same on any box size. Degree 0 returns the box unchanged.
- blackening: Image.blend(box, black, degree), the pixels times (1 - degree), so it depends on the
  degree; degree 1 is black.

Ours keeps, at each degree, the smaller detail of our size-relative curve and BMW's formula.
BMW has no box, median or bilateral blur; ours are held to its Gaussian blur.

How much is hidden: the correlation of the result's luminance with the original face's, at full
size and at 24 x 24 px (its coarse structure); lower hides more, a flat result is 0. Ours must be
at most BMW's + a tolerance: 0.02 for the blurs. Pixelating gets 0.03: at the same block grid
(never finer than BMW's, asserted on its own) our blocks are the mean colour of their pixels, the
closest flat picture of them, where BMW's bilinear shrinking weights each block's centre and mixes
in its neighbours; that lowers BMW's correlation by up to 0.03 with the same number of colours.
"""

import numpy as np
import pytest

from anonymization_api.techniques import TECHNIQUES, TechniqueOptions
from tests.support import bmw
from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, face_at, grace_hopper

DEGREES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SIZES = (40, 220)  # a small and a large face, px along the long side
BLURS = ("blurring", "gaussian_blur", "box_blur", "median_blur", "bilateral_blur")
TOLERANCE = {"pixelating": 0.03} | dict.fromkeys(BLURS, 0.02)
OPTIONS = TechniqueOptions()


def faces(side: int) -> list[np.ndarray]:
    return [face_at(grace_hopper(), GRACE_HOPPER_FACE, side), face_at(astronaut(), ASTRONAUT_FACE, side)]


def blocks_across(image: np.ndarray) -> tuple[int, int]:
    """Columns and rows of flat blocks: one more than the places where neighbouring pixels differ."""
    columns = np.any(image[:, 1:] != image[:, :-1], axis=(0, 2)).sum() + 1
    rows = np.any(image[1:] != image[:-1], axis=(1, 2)).sum() + 1
    return int(columns), int(rows)


@pytest.mark.parametrize("side", SIZES)
@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_ours_hides_at_least_as_much_as_bmw(name, side):
    worse = []
    for face in faces(side):
        for degree in DEGREES:
            ours, theirs = TECHNIQUES[name](face, degree, OPTIONS), bmw.REFERENCE[name](face, degree)
            for scale in (None, 24):
                kept, bmw_kept = bmw.correlation(face, ours, scale), bmw.correlation(face, theirs, scale)
                if kept > bmw_kept + TOLERANCE[name]:
                    worse.append((face.shape[:2], degree, scale, round(kept, 3), round(bmw_kept, 3)))
    assert not worse, worse


@pytest.mark.parametrize("side", SIZES)
def test_pixelating_blocks_are_never_finer_than_bmws(side):
    for face in faces(side):
        height, width = face.shape[:2]
        for degree in DEGREES:
            bmw_blocks = (int(width / (degree * width)), int(height / (degree * height)))
            ours = blocks_across(TECHNIQUES["pixelating"](face, degree, OPTIONS))
            assert ours[0] <= bmw_blocks[0] and ours[1] <= bmw_blocks[1], (face.shape, degree, ours, bmw_blocks)
            assert ours == blocks_across(bmw.pixelating(face, degree))  # the same grid as BMW's


@pytest.mark.parametrize("side", SIZES)
@pytest.mark.parametrize("degree", [0.6, 0.7, 1.0])
def test_pixelating_above_half_is_one_flat_colour(side, degree):
    for face in faces(side):
        out = TECHNIQUES["pixelating"](face, degree, OPTIONS)
        assert (out == out[0, 0]).all()
        assert np.abs(out[0, 0].astype(int) - face.reshape(-1, 3).mean(axis=0)).max() <= 1  # the face's mean


@pytest.mark.parametrize("name", BLURS)
def test_every_blur_flattens_a_small_face_at_degree_one(name):
    for face in faces(SIZES[0]):
        out = TECHNIQUES[name](face, 1.0, OPTIONS)
        assert bmw.correlation(face, out) == 0.0


@pytest.mark.parametrize("side", SIZES)
@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_degree_zero_leaves_every_pixel(name, side):
    for face in faces(side):
        assert np.array_equal(TECHNIQUES[name](face, 0.0, OPTIONS), face)


def test_blackening_is_bmws_blend():
    for face in faces(SIZES[1]):
        for degree in DEGREES:
            ours, theirs = TECHNIQUES["blackening"](face, degree, OPTIONS), bmw.blackening(face, degree)
            assert np.abs(ours.astype(int) - theirs).max() <= 1  # rounding, where PIL truncates
