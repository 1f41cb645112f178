"""Licence-plate recall of the `license_plate` model on an annotated data set, run in-process.

    python bench/plates_recall.py [DATASET_DIR] [--models-dir DIR] [--param NAME=VALUE ...]

DATASET_DIR holds `annotations.json` in the format of `../shared/data/README.md` (default
`../shared/data/plates_us` from the project root). Printed figures, over ground-truth boxes that
are not marked `ignore`:

- coverage recall: share of plates with at least 70 % of their area inside the union of the
  returned boxes (what anonymisation needs);
- IoU recall: share of plates matched one-to-one, greedily by IoU, by a returned box with IoU >= 0.5;
- false alarms per image: returned boxes that cover less than 10 % of the area of every
  ground-truth box, ignored ones included. Data sets such as plates_us annotate one plate per
  image although more are in view, so this is an upper bound on the true false alarms (and the
  precision it implies a lower bound);
- area ratio: for covered plates, the area of the union of the returned boxes that touch the
  plate, over the plate's area (how much more than the plate gets blurred);
- ms per image: wall time of `detect` alone, decoding excluded, after one warm-up image.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from inference_detection.plates import LicensePlate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "data" / "plates_us"
DEFAULT_MODELS = PROJECT_ROOT / "models"
COVERED = 0.7
IOU_MATCH = 0.5
FALSE_ALARM_COVER = 0.1


@dataclass
class Tally:
    """Running totals over the images of a data set."""

    plates: int = 0
    covered: int = 0
    iou_matched: int = 0
    false_alarms: int = 0
    images: int = 0
    area_ratios: list[float] = field(default_factory=list)
    seconds: float = 0.0


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) as a camera would show it (EXIF orientation applied)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def ground_truth(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) x1, y1, x2, y2 of an image's boxes and an (N,) bool mask of the ignored ones."""
    rows = [[box["x1"], box["y1"], box["x2"], box["y2"]] for box in entry["boxes"]]
    ignored = [bool(box.get("ignore", False)) for box in entry["boxes"]]
    return np.asarray(rows, np.float64).reshape(-1, 4), np.asarray(ignored, bool)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas (len(a), len(b)) of x1, y1, x2, y2 boxes."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return width.clip(0) * height.clip(0)


def area(rows: np.ndarray) -> np.ndarray:
    """Areas of x1, y1, x2, y2 boxes."""
    return (rows[:, 2] - rows[:, 0]).clip(0) * (rows[:, 3] - rows[:, 1]).clip(0)


def union_mask(rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels inside any of the boxes."""
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in np.round(rows).astype(int):
        mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return mask


def covered_share(plate: np.ndarray, mask: np.ndarray) -> float:
    """Share of the plate box's pixels inside `mask`."""
    x1, y1, x2, y2 = np.round(plate).astype(int)
    patch = mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)]
    return float(patch.mean()) if patch.size else 0.0


def iou_matches(plates: np.ndarray, found: np.ndarray) -> int:
    """Plates matched one-to-one, greedily by descending IoU, at IoU >= IOU_MATCH."""
    if len(plates) == 0 or len(found) == 0:
        return 0
    overlap = intersection(plates, found)
    iou = overlap / (area(plates)[:, None] + area(found)[None, :] - overlap)
    matched = 0
    while iou.size and iou.max() >= IOU_MATCH:
        plate, box = np.unravel_index(iou.argmax(), iou.shape)
        iou[plate, :] = 0
        iou[:, box] = 0
        matched += 1
    return matched


def score_image(tally: Tally, entry: dict, found: np.ndarray, height: int, width: int) -> None:
    """Add one image's detections `found` (N, 4) to the tally."""
    plates, ignored = ground_truth(entry)
    overlap = intersection(found, plates) if len(plates) else np.zeros((len(found), 0))
    plate_cover = overlap / np.maximum(area(plates), 1e-9)[None, :]
    tally.false_alarms += int((~(plate_cover >= FALSE_ALARM_COVER).any(axis=1)).sum())
    counted = plates[~ignored]
    tally.plates += len(counted)
    tally.iou_matched += iou_matches(counted, found)
    mask = union_mask(found, height, width)
    touching = overlap[:, ~ignored] > 0
    for index, plate in enumerate(counted):
        if covered_share(plate, mask) < COVERED:
            continue
        tally.covered += 1
        blurred = union_mask(found[touching[:, index]], height, width).sum()
        tally.area_ratios.append(float(blurred) / max(float(area(plate[None])[0]), 1e-9))


def run(dataset: Path, models_dir: Path, raw_params: dict[str, str]) -> Tally:
    """Detect on every image of `dataset` and tally the figures."""
    annotations = json.loads((dataset / "annotations.json").read_text())
    model = LicensePlate()
    model.load(models_dir)
    params = model.parse_params(raw_params)
    tally = Tally()
    for index, entry in enumerate(annotations["images"]):
        image = load_image(dataset / entry["file"])
        if index == 0:
            model.detect(image, params)
        start = time.perf_counter()
        found = model.detect(image, params)[:, :4].astype(np.float64)
        tally.seconds += time.perf_counter() - start
        tally.images += 1
        score_image(tally, entry, found, image.shape[0], image.shape[1])
    return tally


def report(tally: Tally) -> str:
    """The figures as printable lines."""
    plates = max(tally.plates, 1)
    images = max(tally.images, 1)
    ratio = float(np.mean(tally.area_ratios)) if tally.area_ratios else float("nan")
    median = float(np.median(tally.area_ratios)) if tally.area_ratios else float("nan")
    return "\n".join(
        [
            f"images {tally.images}, plates {tally.plates}",
            f"coverage recall (>= {COVERED:.0%} of plate inside returned boxes): {tally.covered / plates:.3f}"
            f" ({tally.covered}/{tally.plates})",
            f"IoU >= {IOU_MATCH} detection recall: {tally.iou_matched / plates:.3f}"
            f" ({tally.iou_matched}/{tally.plates})",
            f"false alarms per image (boxes covering < {FALSE_ALARM_COVER:.0%} of every annotated plate;"
            f" upper bound, unannotated plates count): {tally.false_alarms / images:.2f}",
            f"returned area / plate area, covered plates: mean {ratio:.2f}, median {median:.2f}",
            f"ms per image (detect only): {1000 * tally.seconds / images:.0f}",
        ]
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET, help="folder with annotations.json")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS, help="folder with the model files")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="request parameter, repeatable"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raw_params = dict(item.split("=", 1) for item in args.param)
    tally = run(args.dataset, args.models_dir, raw_params)
    sys.stdout.write(report(tally) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
