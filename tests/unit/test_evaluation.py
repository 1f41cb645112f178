"""The metrics of `anonymizer eval` on synthetic boxes, each case chosen so a wrong rule fails it."""

import numpy as np
import pytest

from anonymization_api.regions import RegionStyle, box_regions
from anonymizer_tools.evaluation import (
    Found,
    Truth,
    configuration_for,
    coverage_shares,
    enlarged,
    false_alarms,
    hidden_mask,
    iou_matched,
    lowered,
    score_image,
)


def boxes(*rows) -> np.ndarray:
    return np.asarray(rows, np.float64).reshape(-1, 4)


def found(*rows, scores=None, hidden=None, shape="box") -> Found:
    dets = boxes(*rows)
    scores = np.ones(len(dets)) if scores is None else np.asarray(scores, np.float64)
    hidden = [[list(row)] for row in dets] if hidden is None else hidden
    return Found(dets, scores, hidden, [shape] * len(dets))


def test_hidden_mask_boxes_are_end_exclusive_and_clipped():
    mask = hidden_mask(boxes((2, 3, 6, 5), (-5, -5, 1, 1)), ["box", "box"], 10, 10)
    assert mask.sum() == 4 * 2 + 1
    assert mask[3:5, 2:6].all() and mask[0, 0]


def test_hidden_mask_ellipse_is_smaller_than_its_box():
    mask = hidden_mask(boxes((0, 0, 100, 100)), ["ellipse"], 100, 100)
    assert abs(mask.sum() / 10_000 - np.pi / 4) < 0.03
    assert not mask[0, 0] and mask[50, 50]


def test_evaluator_counts_exactly_the_pixels_the_service_hides():
    # An ellipse with a soft edge, half outside the image: the audit's bounds include the feather
    # ramp and are clipped, so only its outline redraws what was fully hidden.
    style = RegionStyle(mask_scale=1.3, shape="ellipse", feather=0.4)
    (region,) = box_regions(boxes((-20.4, 10.6, 41.3, 77.2)), style, 60, 90)
    service = np.zeros((90, 60), bool)
    service[region.y1 : region.y2, region.x1 : region.x2] = region.alpha >= 1.0
    evaluator = hidden_mask(boxes(region.outline), ["ellipse"], 90, 60)
    assert service.sum() > 500 and np.array_equal(service, evaluator)


@pytest.mark.parametrize(("hidden_height", "covered"), [(7, True), (6, False)])
def test_coverage_needs_seventy_percent_of_the_box(hidden_height, covered):
    truth = Truth(boxes((0, 0, 10, 10)), boxes())
    tally = score_image(truth, found((0, 0, 10, 10), hidden=[[[0, 0, 10, hidden_height]]]), 20, 20)
    assert tally.covered == int(covered)
    assert tally.matched == 1  # the detection box itself is exact; only the hidden region is short


def test_coverage_counts_the_union_of_several_regions():
    mask = hidden_mask(boxes((0, 0, 10, 4), (0, 4, 10, 8)), ["box", "box"], 20, 20)
    assert coverage_shares(boxes((0, 0, 10, 10)), mask) == pytest.approx([0.8])


def test_iou_recall_is_one_to_one_at_half():
    truth = boxes((0, 0, 10, 10), (1, 0, 11, 10))
    assert iou_matched(truth, boxes((0, 0, 10, 10))).sum() == 1  # one box cannot match two faces
    assert iou_matched(boxes((0, 0, 10, 10)), boxes((0, 0, 10, 5))).tolist() == [True]  # IoU exactly 0.5
    assert iou_matched(boxes((0, 0, 10, 10)), boxes((0, 0, 10, 4.9))).tolist() == [False]
    assert iou_matched(boxes(), boxes((0, 0, 1, 1))).shape == (0,)


def test_false_alarms_spare_matches_duplicates_and_ignored_boxes():
    truth, ignored = boxes((0, 0, 10, 10)), boxes((50, 50, 70, 70))
    dets = boxes(
        (0, 0, 10, 10),  # the face
        (1, 1, 10, 10),  # a duplicate of it: hides the same face, not an alarm
        (52, 52, 60, 60),  # inside the ignored box
        (47, 47, 60, 60),  # more than half (100 of 169 px) inside the ignored box
        (30, 30, 40, 40),  # nothing there
        (0, 0, 30, 30),  # around the face but far too loose (IoU 0.11)
    )
    assert false_alarms(dets, truth, ignored).tolist() == [False, False, False, False, True, True]


def test_ignored_boxes_count_neither_way():
    truth = Truth(boxes((0, 0, 10, 10)), boxes((40, 40, 50, 50), (80, 80, 90, 90)))
    tally = score_image(truth, found((0, 0, 10, 10), (40, 40, 50, 50)), 100, 100)
    assert (tally.boxes, tally.covered, tally.matched, tally.false_alarms) == (1, 1, 1, 0)
    assert tally.figures()["coverage_recall"] == 1.0


def test_over_anonymisation_is_over_the_union_of_boxes_grown_1_6x():
    assert enlarged(boxes((10, 10, 20, 30)), 1.6).tolist() == [[7.0, 4.0, 23.0, 36.0]]
    truth = Truth(boxes((20, 20, 30, 30), (22, 20, 32, 30)), boxes())
    # The two grown boxes, x 17..33 and 19..35 by y 17..33, unite to 18 x 16 = 288 px.
    tally = score_image(truth, found((0, 0, 12, 12)), 100, 100)
    assert tally.reference_pixels == 288
    assert tally.hidden_pixels == 144
    figures = tally.figures()
    assert figures["over_anonymisation"] == pytest.approx(144 / 288)
    assert figures["area_share"] == pytest.approx(144 / 10_000)
    assert figures["false_alarms_per_image"] == 1.0
    assert figures["coverage_recall"] == 0.0


def test_threshold_filter_keeps_regions_with_their_detections():
    dets = found((0, 0, 10, 10), (20, 20, 30, 30), scores=[0.9, 0.1])
    kept = dets.above(0.5)
    assert kept.scores.tolist() == [0.9] and kept.hidden == [[[0.0, 0.0, 10.0, 10.0]]]
    truth = Truth(boxes((0, 0, 10, 10), (20, 20, 30, 30)), boxes())
    assert score_image(truth, kept, 40, 40).covered == 1
    assert score_image(truth, dets.above(0.05), 40, 40).covered == 2


def test_configuration_defaults_presets_and_sweep():
    content = configuration_for(["face", "license_plate"], None, "strict")
    assert [e["class_name"] for e in content["sensitive_info"]] == ["face", "license_plate"]
    assert all(e["preset"] == "strict" for e in content["sensitive_info"])
    low = lowered({"sensitive_info": [{"class_name": "face"}, {"class_name": "x", "score_threshold": 0.01}]}, 0.05)
    assert [e["score_threshold"] for e in low["sensitive_info"]] == [0.05, 0.01]
