"""Techniques and regions on synthetic arrays: what a degree does, and where pixels change."""

import numpy as np
import pytest

from anonymization_api.regions import RegionStyle, apply_regions, box_regions, mask_regions
from anonymization_api.techniques import TECHNIQUES, TechniqueOptions

OPTIONS = TechniqueOptions(color=(255, 0, 0))


def textured(height: int = 120, width: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def detail(region: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: what survives of the texture."""
    signed = region.astype(np.int16)
    return float(np.abs(np.diff(signed, axis=0)).mean() + np.abs(np.diff(signed, axis=1)).mean())


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_degree_zero_keeps_the_region_and_the_shape_stays(name):
    region = textured()
    out = TECHNIQUES[name](region, 0.0, OPTIONS)
    assert out.shape == region.shape and out.dtype == np.uint8
    assert np.array_equal(out, region)


@pytest.mark.parametrize("name", sorted(set(TECHNIQUES) - {"blackening", "solid"}))
def test_detail_falls_with_the_degree_and_is_gone_at_one(name):
    region = textured()
    kept = [detail(TECHNIQUES[name](region, degree, OPTIONS)) for degree in (0.0, 0.5, 1.0)]
    assert kept[0] > kept[1] > kept[2]
    assert kept[2] < 0.15 * kept[0]


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 40, 3), (40, 1, 3), (2, 3, 3)])
def test_tiny_regions_never_fail(name, shape):
    out = TECHNIQUES[name](textured(*shape[:2]), 1.0, OPTIONS)
    assert out.shape == shape


def test_blackening_and_solid_reach_their_colour():
    region = textured()
    assert (TECHNIQUES["blackening"](region, 1.0, OPTIONS) == 0).all()
    assert (TECHNIQUES["solid"](region, 1.0, OPTIONS) == [255, 0, 0]).all()


def test_a_box_region_changes_its_box_and_nothing_else():
    image = textured(200, 300)
    before = image.copy()
    regions = box_regions(np.array([[50, 40, 150, 120, 0.9, 0]], np.float32), RegionStyle(), 300, 200)
    apply_regions(image, regions, TECHNIQUES["solid"], 1.0, OPTIONS)
    assert (image[40:120, 50:150] == [255, 0, 0]).all()
    outside = np.ones((200, 300), bool)
    outside[40:120, 50:150] = False
    assert np.array_equal(image[outside], before[outside])


@pytest.mark.parametrize("shape", ["box", "ellipse"])
def test_a_hard_edged_region_hides_exactly_the_pixels_the_evaluator_counts(shape):
    # Boxes at fractional pixels: a plain box is copied in without blending, and still hides
    # exactly draw_shape's pixels (what docs/privacy.md's figures count), no row or column more.
    from anonymizer_tools.evaluation import hidden_mask

    image = textured(200, 300)
    before = image.copy()
    rows = np.array([[50.6, 40.4, 150.5, 119.6, 0.9, 0], [-4.3, 150.2, 30.7, 230.0, 0.9, 0]], np.float32)
    regions = box_regions(rows, RegionStyle(shape=shape), 300, 200)
    assert [region.solid for region in regions] == [shape == "box"] * 2
    apply_regions(image, regions, TECHNIQUES["solid"], 1.0, OPTIONS)
    changed = (image != before).any(axis=2)
    outlines = np.array([region.outline for region in regions], np.float64)
    counted = hidden_mask(outlines, [shape] * 2, 200, 300)
    if shape == "box":
        assert np.array_equal(changed, counted)
    else:  # OpenCV rasterises an ellipse cut by its canvas a few edge pixels short
        assert not (changed & ~counted).any() and (counted & ~changed).sum() < 0.01 * counted.sum()


def test_an_ellipse_leaves_the_corners_and_mask_scale_grows_the_box():
    image = np.zeros((200, 200, 3), np.uint8)
    style = RegionStyle(mask_scale=1.5, shape="ellipse")
    (region,) = box_regions(np.array([[60, 60, 140, 140, 1, 0]], np.float32), style, 200, 200)
    assert region.outline == (40, 40, 160, 160)
    apply_regions(image, [region], TECHNIQUES["solid"], 1.0, OPTIONS)
    assert (image[100, 100] == [255, 0, 0]).all() and (image[41, 41] == 0).all()


def test_boxes_outside_the_image_or_without_area_are_skipped():
    dets = np.array([[500, 500, 600, 600, 1, 0], [10, 10, 10, 50, 1, 0]], np.float32)
    assert box_regions(dets, RegionStyle(), 100, 100) == []


def test_feather_softens_only_outside_the_region():
    image = np.zeros((100, 100, 3), np.uint8)
    style = RegionStyle(feather=0.5)
    (region,) = box_regions(np.array([[40, 40, 60, 60, 1, 0]], np.float32), style, 100, 100)
    apply_regions(image, [region], TECHNIQUES["solid"], 1.0, OPTIONS)
    assert (image[40:60, 40:60] == [255, 0, 0]).all()  # the found box fully hidden
    assert 0 < image[50, 36, 0] < 255  # a soft edge outside it


def test_mask_regions_cover_the_mask_grown_by_its_margin():
    mask = np.zeros((50, 80), bool)
    mask[10:20, 10:30] = True
    mask[30:40, 50:70] = True
    regions = mask_regions(mask, RegionStyle())
    assert len(regions) == 2
    image = np.zeros((50, 80, 3), np.uint8)
    apply_regions(image, regions, TECHNIQUES["solid"], 1.0, OPTIONS)
    assert (image[mask] == [255, 0, 0]).all()
    assert (image[45:, :] == 0).all()
