"""`anonymizer eval`: privacy quality of the running service on an annotated data set.

    anonymizer eval DATASET_DIR [--config cfg.json] [--preset strict] [--report r.json] [--plot r.png]

DATASET_DIR holds `annotations.json` in the format of `docs/privacy.md`. Every image is
sent, as stored, to `POST /anonymize` with `detections=only`; the answer says which rectangles
(or ellipses inscribed in them) were hidden and which detection boxes, with their scores, caused
them. Figures per class, over the ground-truth boxes not marked `ignore` (ignored boxes count
neither as a miss nor as a false alarm):

- coverage recall: share of boxes with at least 70 % of their area inside the region the entries
  of that class anonymised;
- IoU recall: share of boxes matched one-to-one (greedily, best IoU first) by a detection box at
  IoU >= 0.5;
- false alarms per image: detection boxes whose IoU with every ground-truth box (ignored ones
  included) is below 0.5 and that do not lie at least half inside an ignored box. Duplicates of
  a found face are not false alarms (they hide the same face twice);
- area share: anonymised pixels over all image pixels;
- over-anonymisation ratio: anonymised pixels over the pixels of the union of the ground-truth
  boxes (ignored ones included) enlarged 1.6x about their centres, pooled over the data set;
- images per second: through the API, decoding and encoding included, with `--workers` clients.

A second pass with every entry's score threshold lowered to `--sweep-from` gives recall, false
alarms and the ratio against the score threshold, filtered offline (`--no-sweep` skips it).
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from anonymization_api.regions import draw_shape
from anonymization_api.schemas import ImageAudit, RegionAudit
from anonymizer_shared.boxes import areas, intersection_matrix, iou_matrix

logger = logging.getLogger(__name__)

COVERED = 0.7
IOU_MATCH = 0.5
REFERENCE_SCALE = 1.6
IGNORED_INSIDE = 0.5
SWEEP_STEP = 0.05
DEFAULT_ENTRIES = {
    "face": {"class_name": "face", "inference_type": "detection"},
    "license_plate": {"class_name": "license_plate", "inference_type": "detection"},
    "person": {"class_name": "person", "inference_type": "detection"},
    "vehicle": {"class_name": "vehicle", "inference_type": "detection"},
}
HIDING = {"anonymization_technique": "blurring", "anonymization_degree": 1}


class EvaluationError(Exception):
    """The data set, the configuration or the service cannot be evaluated; the message says why."""


# --- metrics on plain arrays -------------------------------------------------------------------


def hidden_mask(rects: np.ndarray, shapes: list[str], height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask of hidden rectangles (N, 4) x1, y1, x2, y2 (end exclusive), or ellipses in
    them, drawn as the service draws them."""
    mask = np.zeros((height, width), np.uint8)
    for rect, shape in zip(np.round(rects).astype(int), shapes, strict=True):
        draw_shape(mask, tuple(int(v) for v in rect), shape)
    return mask.astype(bool)


def coverage_shares(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share (N,) of each ground-truth box (N, 4) whose pixels lie inside `mask` (H, W)."""
    shares = np.zeros(len(truth))
    height, width = mask.shape
    for index, (x1, y1, x2, y2) in enumerate(np.round(truth).astype(int)):
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(max(x2, x1 + 1), width), min(max(y2, y1 + 1), height)
        patch = mask[y1:y2, x1:x2]
        shares[index] = patch.mean() if patch.size else 0.0
    return shares


def iou_matched(truth: np.ndarray, found: np.ndarray, threshold: float = IOU_MATCH) -> np.ndarray:
    """(N,) bool: ground-truth boxes matched one-to-one, greedily by best IoU, by a box of `found` (K, 4)."""
    matched = np.zeros(len(truth), bool)
    if len(truth) == 0 or len(found) == 0:
        return matched
    iou = iou_matrix(truth[:, :4].astype(np.float64), found[:, :4].astype(np.float64))
    while iou.size and iou.max() >= threshold:
        row, col = np.unravel_index(iou.argmax(), iou.shape)
        matched[row] = True
        iou[row, :] = 0
        iou[:, col] = 0
    return matched


def false_alarms(found: np.ndarray, truth: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """(K,) bool: boxes of `found` with IoU < 0.5 to every true box (counted or ignored) and not half inside
    an ignored box."""
    alarms = np.ones(len(found), bool)
    if len(found) == 0:
        return alarms
    everything = np.concatenate([truth.reshape(-1, 4), ignored.reshape(-1, 4)]).astype(np.float64)
    if len(everything):
        alarms &= (iou_matrix(found[:, :4].astype(np.float64), everything) < IOU_MATCH).all(axis=1)
    if len(ignored):
        inside = intersection_matrix(found, ignored) / np.maximum(areas(found), 1e-9)[:, None]
        alarms &= ~(inside >= IGNORED_INSIDE).any(axis=1)
    return alarms


def enlarged(rows: np.ndarray, factor: float) -> np.ndarray:
    """Boxes (N, 4) grown by `factor` in width and height about their centres."""
    rows = rows.reshape(-1, 4).astype(np.float64)
    centre = (rows[:, :2] + rows[:, 2:]) / 2
    half = (rows[:, 2:] - rows[:, :2]) * factor / 2
    return np.concatenate([centre - half, centre + half], axis=1)


@dataclass
class Tally:
    """Counts over the images of one class; `figures` turns them into the published rates."""

    images: int = 0
    boxes: int = 0
    covered: int = 0
    matched: int = 0
    false_alarms: int = 0
    hidden_pixels: int = 0
    image_pixels: int = 0
    reference_pixels: int = 0

    @property
    def missed(self) -> int:
        """Boxes not covered: the count two tools are compared by where their coverage is within a face."""
        return self.boxes - self.covered

    def add(self, other: "Tally") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def figures(self) -> dict[str, float]:
        return {
            "coverage_recall": self.covered / self.boxes if self.boxes else float("nan"),
            "iou_recall": self.matched / self.boxes if self.boxes else float("nan"),
            "false_alarms_per_image": self.false_alarms / self.images if self.images else float("nan"),
            "area_share": self.hidden_pixels / self.image_pixels if self.image_pixels else float("nan"),
            "over_anonymisation": self.hidden_pixels / self.reference_pixels if self.reference_pixels else float("inf"),
        }


@dataclass
class Truth:
    """One image's ground truth of one class: counted (N, 4) and ignored (M, 4) boxes."""

    counted: np.ndarray
    ignored: np.ndarray


@dataclass
class Found:
    """One image's detections of one class: boxes (K, 4), scores (K,), and per detection its hidden
    rectangles and their shape."""

    boxes: np.ndarray
    scores: np.ndarray
    hidden: list[list[list[float]]] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    def above(self, threshold: float) -> "Found":
        keep = self.scores >= threshold
        return Found(
            self.boxes[keep],
            self.scores[keep],
            [h for h, k in zip(self.hidden, keep, strict=True) if k],
            [s for s, k in zip(self.shapes, keep, strict=True) if k],
        )


def score_image(truth: Truth, found: Found, height: int, width: int) -> Tally:
    """The tally of one image and class."""
    rects = [rect for rects in found.hidden for rect in rects]
    shapes = [shape for rects, shape in zip(found.hidden, found.shapes, strict=True) for _ in rects]
    mask = hidden_mask(np.asarray(rects, np.float64).reshape(-1, 4), shapes, height, width)
    return score_mask(truth, mask, found.boxes)


def score_mask(truth: Truth, mask: np.ndarray, found: np.ndarray) -> Tally:
    """The tally of one image and class from the bool (H, W) mask of what was hidden and the detection
    boxes (K, 4) behind it. A tool known only by its output image gives no boxes: its IoU recall and
    false alarms then count nothing, its coverage and over-anonymisation are exact."""
    height, width = mask.shape
    everything = np.concatenate([truth.counted, truth.ignored]).reshape(-1, 4)
    reference = hidden_mask(enlarged(everything, REFERENCE_SCALE), ["box"] * len(everything), height, width)
    return Tally(
        images=1,
        boxes=len(truth.counted),
        covered=int((coverage_shares(truth.counted, mask) >= COVERED).sum()),
        matched=int(iou_matched(truth.counted, found).sum()),
        false_alarms=int(false_alarms(found, truth.counted, truth.ignored).sum()),
        hidden_pixels=int(mask.sum()),
        image_pixels=height * width,
        reference_pixels=int(reference.sum()),
    )


# --- the data set and the service ---------------------------------------------------------------


def load_dataset(dataset: Path, limit: int | None) -> dict[str, Any]:
    """annotations.json of `dataset`, its image list cut to `limit`."""
    path = dataset / "annotations.json"
    try:
        annotations = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(annotations.get("images"), list):
        raise EvaluationError(f"{path} has no 'images' list (see docs/privacy.md for the format)")
    if limit is not None:
        annotations["images"] = annotations["images"][:limit]
    return annotations


def ground_truth(entry: dict[str, Any], label: str) -> Truth:
    """The boxes of `label` in one image entry of annotations.json."""
    counted, ignored = [], []
    for box in entry.get("boxes", []):
        if box.get("label") != label:
            continue
        row = [box["x1"], box["y1"], box["x2"], box["y2"]]
        (ignored if box.get("ignore") else counted).append(row)
    return Truth(np.asarray(counted, np.float64).reshape(-1, 4), np.asarray(ignored, np.float64).reshape(-1, 4))


def configuration_for(classes: list[str], config: Path | None, preset: str | None) -> dict[str, Any]:
    """The user configuration: the file given, or one entry per class of the data set."""
    if config is not None:
        try:
            content = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EvaluationError(f"cannot read the configuration {config}: {exc}") from exc
    else:
        unknown = [name for name in classes if name not in DEFAULT_ENTRIES]
        if unknown:
            raise EvaluationError(f"no default configuration for classes {unknown}; pass --config")
        content = {"sensitive_info": [{**DEFAULT_ENTRIES[name], **HIDING} for name in classes]}
    if not isinstance(content, dict) or not isinstance(content.get("sensitive_info"), list):
        raise EvaluationError("the configuration needs a 'sensitive_info' list")
    if preset is not None:
        content = {**content, "sensitive_info": [{**entry, "preset": preset} for entry in content["sensitive_info"]]}
    return content


def lowered(configuration: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The configuration with every entry's score threshold at most `threshold`, for the sweep."""
    entries = []
    for entry in configuration["sensitive_info"]:
        wanted = entry.get("score_threshold")
        entries.append({**entry, "score_threshold": threshold if wanted is None else min(wanted, threshold)})
    return {**configuration, "sensitive_info": entries}


def anonymise(client: httpx.Client, api: str, image: Path, configuration: str, form: dict[str, str]) -> ImageAudit:
    """The API's `detections=only` answer for one image file; `form` adds request fields."""
    try:
        answer = client.post(
            f"{api.rstrip('/')}/anonymize",
            files={"image": (image.name, image.read_bytes())},
            data={"configuration": configuration, "detections": "only", **form},
        )
    except (httpx.HTTPError, OSError) as exc:
        raise EvaluationError(f"{image.name}: {exc}") from exc
    if answer.status_code != 200:
        raise EvaluationError(f"{image.name}: the API answered {answer.status_code}: {answer.text[:500]}")
    try:
        return ImageAudit.model_validate(answer.json()["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"{image.name}: the API's answer is not an audit ({exc})") from exc


def detections_by_class(audit: ImageAudit, classes: list[str]) -> dict[str, Found]:
    """The API's audit of one image, grouped by class name."""
    rows: dict[str, list[RegionAudit]] = {name: [] for name in classes}
    for entry in audit.detections:
        rows.setdefault(entry.class_name, []).extend(entry.regions)
    result = {}
    for name, regions in rows.items():
        result[name] = Found(
            np.asarray([r.box for r in regions], np.float64).reshape(-1, 4),
            np.asarray([1.0 if r.score is None else r.score for r in regions], np.float64),
            [r.outline or r.hidden for r in regions],  # a detection's shape; a mask's bounds
            [r.shape for r in regions],
        )
    return result


def run_pass(
    dataset: Path,
    images: list[dict],
    api: str,
    configuration: dict[str, Any],
    classes: list[str],
    workers: int,
    form: dict[str, str],
) -> tuple[list[dict[str, Any]], float]:
    """Send every image; the per-image detections by class, and the wall time in seconds."""
    text = json.dumps(configuration)
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter()
        answers = list(pool.map(lambda entry: anonymise(client, api, dataset / entry["file"], text, form), images))
        seconds = time.perf_counter() - start
    results = []
    for entry, audit in zip(images, answers, strict=True):
        if (audit.width, audit.height) != (entry.get("width", audit.width), entry.get("height", audit.height)):
            logger.warning("%s: annotated %sx%s, decoded %sx%s", entry["file"], entry.get("width"),
                           entry.get("height"), audit.width, audit.height)  # fmt: skip
        results.append({"size": (audit.height, audit.width), "found": detections_by_class(audit, classes)})
    return results, seconds


def tally(images: list[dict], results: list[dict[str, Any]], label: str, threshold: float = 0.0) -> Tally:
    """The tally of one class over the data set, keeping detections scoring at least `threshold`."""
    total = Tally()
    for entry, result in zip(images, results, strict=True):
        height, width = result["size"]
        total.add(score_image(ground_truth(entry, label), result["found"][label].above(threshold), height, width))
    return total


def sweep(images: list[dict], results: list[dict[str, Any]], label: str, start: float) -> list[dict[str, float]]:
    """Figures of one class at score thresholds from `start` to 0.95."""
    thresholds = np.round(np.arange(start, 0.951, SWEEP_STEP), 3)
    return [{"threshold": float(t), **tally(images, results, label, float(t)).figures()} for t in thresholds]


def plot(report: dict[str, Any], path: Path) -> None:
    """PNG of recall (coverage, IoU) and false alarms per image against the score threshold, per class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = [name for name, figures in report["classes"].items() if figures.get("sweep")]
    figure = Figure(figsize=(5.5 * max(1, len(classes)), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    for index, name in enumerate(classes):
        axes = figure.add_subplot(1, max(1, len(classes)), index + 1)
        points = report["classes"][name]["sweep"]
        thresholds = [p["threshold"] for p in points]
        axes.plot(thresholds, [p["coverage_recall"] for p in points], "o-", label="coverage recall (70 %)")
        axes.plot(thresholds, [p["iou_recall"] for p in points], "s--", label="IoU 0.5 recall")
        axes.set_xlabel("score threshold")
        axes.set_ylabel("recall")
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        alarms = axes.twinx()
        alarms.plot(thresholds, [p["false_alarms_per_image"] for p in points], "^:", color="tab:red")
        alarms.set_ylabel("false alarms per image", color="tab:red")
        axes.legend(loc="lower left", fontsize="small")
        axes.set_title(f"{report['dataset']}: {name}")
    if not classes:
        figure.add_subplot(1, 1, 1).text(0.5, 0.5, "no sweep", ha="center")
    figure.savefig(path, format="png", dpi=100)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the data set through the API and build the report."""
    annotations = load_dataset(args.dataset, args.limit)
    images = annotations["images"]
    classes = list(annotations.get("classes") or sorted({b["label"] for e in images for b in e.get("boxes", [])}))
    configuration = configuration_for(classes, args.config, args.preset)
    form = {"detection_size": args.detection_size} if args.detection_size else {}
    results, seconds = run_pass(args.dataset, images, args.api, configuration, classes, args.workers, form)
    report: dict[str, Any] = {
        "dataset": annotations.get("dataset", args.dataset.name),
        "images": len(images),
        "configuration": configuration,
        "workers": args.workers,
        "detection_size": args.detection_size,
        "seconds": round(seconds, 3),
        "images_per_second": len(images) / seconds if seconds > 0 else float("nan"),
        "definitions": {
            "coverage_recall": f"share of boxes with >= {COVERED:.0%} of their area anonymised",
            "iou_recall": f"share of boxes matched one-to-one by a detection at IoU >= {IOU_MATCH}",
            "false_alarms_per_image": f"detections with IoU < {IOU_MATCH} to every true box and not at least"
            f" {IGNORED_INSIDE:.0%} inside an ignored box, per image",
            "area_share": "anonymised pixels over image pixels",
            "over_anonymisation": f"anonymised pixels over the union of the true boxes enlarged {REFERENCE_SCALE}x",
        },
        "classes": {},
    }
    for label in classes:
        counts = tally(images, results, label)
        report["classes"][label] = {"boxes": counts.boxes, **counts.figures(), "counts": asdict(counts)}
    if args.sweep_from is not None:
        low, _ = run_pass(args.dataset, images, args.api, lowered(configuration, args.sweep_from), classes, 1, form)
        for label in classes:
            report["classes"][label]["sweep"] = sweep(images, low, label, args.sweep_from)
    return report


def summary(report: dict[str, Any]) -> str:
    """The report as printable lines."""
    lines = [
        f"{report['dataset']}: {report['images']} images, {report['images_per_second']:.2f} images/s"
        f" ({report['workers']} client{'s' if report['workers'] > 1 else ''})",
        f"{'class':<15}{'boxes':>7}{'coverage':>10}{'IoU0.5':>9}{'FA/img':>9}{'area':>8}{'over-anon':>11}",
    ]
    for name, fig in report["classes"].items():
        lines.append(
            f"{name:<15}{fig['boxes']:>7}{fig['coverage_recall']:>10.3f}{fig['iou_recall']:>9.3f}"
            f"{fig['false_alarms_per_image']:>9.2f}{fig['area_share']:>8.3f}{fig['over_anonymisation']:>11.2f}"
        )
    return "\n".join(lines)


def _handle(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the figures
    try:
        report = evaluate(args)
    except EvaluationError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(summary(report) + "\n")
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot is not None:
        plot(report, args.plot)
    return 0


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `eval` on the CLI."""
    command = commands.add_parser(
        "eval",
        help="measure recall, false alarms and over-anonymisation of the running API on an annotated data set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("dataset", type=Path, metavar="DATASET_DIR", help="folder with annotations.json")
    command.add_argument(
        "--config", type=Path, default=None, help="user configuration JSON (default: one entry per class of the set)"
    )
    command.add_argument("--preset", default=None, help="model preset set on every entry, e.g. strict or balanced")
    command.add_argument("--api", default="http://127.0.0.1:4343", help="the API's URL")
    command.add_argument("--detection-size", metavar="WxH", help="send detection_size, e.g. 960x544")
    command.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    command.add_argument("--plot", type=Path, default=None, help="write the recall-against-threshold PNG here")
    command.add_argument("--limit", type=_positive(int), default=None, help="only the first N images")
    command.add_argument("--workers", type=_positive(int), default=1, help="concurrent requests (default 1)")
    sweep_group = command.add_mutually_exclusive_group()
    sweep_group.add_argument(
        "--sweep-from", type=float, default=0.05, help="lowest score threshold of the sweep (default 0.05)"
    )
    sweep_group.add_argument("--no-sweep", dest="sweep_from", action="store_const", const=None, help="skip the sweep")
    command.set_defaults(handler=_handle)
