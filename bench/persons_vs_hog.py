"""Persons: YOLOv4-tiny (the `person` label of the detection server) against the HOG people detector
it replaced, on annotated pedestrians, through the real `/anonymize`, in one run.

    .venv/bin/python -m bench.persons_vs_hog [--dataset DIR] [--far] [--json PATH]

The set (default `../shared/data/persons_tud_campus`) is `annotations.json` with its images (format
of `../shared/data/README.md`). `--far` adds two sets built from it in a temporary folder, for the
far pedestrians the shared set lacks: each image a 3x3 and a 4x4 mosaic of its frames shrunk into
one 640x480 frame (pedestrians 43-103 and 32-77 px high).

Ours runs in `serve-detection`, HOG (`bench.hog_person`, the former `person` model, kept only here)
in a server of its own; each is the only `person` model of an API (`serve-api`) of its own, and
each image goes through `POST /anonymize` with the default person entry (`anonymizer eval`'s
configuration, blurring at degree 1) and `detections=include` (the anonymised JPEG is encoded and
sent back too), one client, after one untimed image of each size. Scored by `anonymizer eval`'s
own functions: coverage (a true box counts when 70 % of it is hidden) and over-anonymisation
(hidden pixels over the union of the true boxes grown 1.6x). Per stage: the detection (the model's
own time for the same requests, from its server's `anonymizer_model_inference_duration_seconds`)
and the rest of `/anonymize` (decoding, transfer, hiding, encoding).

Targets on the TUD-Campus set: coverage >= 0.98 with over-anonymisation <= 1.5, and >= 3x HOG's
images per second.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from anonymizer_shared.images import read_image
from anonymizer_tools.evaluation import EvaluationError, configuration_for, load_dataset, run_pass, tally
from anonymizer_tools.processes import free_port, resident_mb, running, stop, wait_until_ready
from inference_common.models import PROJECT_ROOT, default_models_dir, fetch_models
from inference_common.quantisation import describe_machine

LABEL = "person"
INFERENCE_METRIC = "anonymizer_model_inference_duration_seconds"
COVERAGE_TARGET, OVER_BOUND, SPEED_TARGET = 0.98, 1.5, 3.0


def mosaic(source: Path, target: Path, side: int) -> Path:
    """A set of 640x480 frames, each `side` x `side` frames of `source` shrunk into it, boxes with them."""
    annotations = json.loads((source / "annotations.json").read_text())
    frames = annotations["images"]
    (target / "images").mkdir(parents=True)
    images = []
    cell_w, cell_h = 640 // side, 480 // side
    for start in range(0, len(frames), 2):  # overlapping mosaics: every frame appears in several
        canvas = np.zeros((cell_h * side, cell_w * side, 3), np.uint8)
        boxes = []
        for cell in range(side * side):
            frame = frames[(start + cell * 3) % len(frames)]
            pixels = cv2.imread(str(source / frame["file"]))
            sx, sy = cell_w / frame["width"], cell_h / frame["height"]
            ox, oy = (cell % side) * cell_w, (cell // side) * cell_h
            canvas[oy : oy + cell_h, ox : ox + cell_w] = cv2.resize(
                pixels, (cell_w, cell_h), interpolation=cv2.INTER_AREA
            )
            for box in frame["boxes"]:
                moved = {"x1": box["x1"] * sx + ox, "x2": box["x2"] * sx + ox, "y1": box["y1"] * sy + oy}
                boxes.append({**box, **moved, "y2": box["y2"] * sy + oy})
        name = f"images/{start:04d}.jpg"
        cv2.imwrite(str(target / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"file": name, "width": canvas.shape[1], "height": canvas.shape[0], "boxes": boxes})
    record = {"dataset": f"{annotations.get('dataset', source.name)} as {side}x{side} mosaics", "images": images}
    (target / "annotations.json").write_text(json.dumps(record))
    return target


def inference_seconds(server: str, model: str) -> float:
    """The detection server's own running total of the time `model` took (its Prometheus histogram)."""
    text = httpx.get(f"{server}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{INFERENCE_METRIC}_sum" and sample.labels.get("model") == model:
                return sample.value
    return 0.0


def measure(api: str, server: str, model: str, dataset: Path) -> dict[str, Any]:
    """One detector through /anonymize with the default person entry: the figures of one row."""
    images = load_dataset(dataset, None)["images"]
    warm = list({(entry["width"], entry["height"]): entry for entry in images}.values())
    configuration = configuration_for([LABEL], None, None)
    form = {"detections": "include"}
    run_pass(dataset, warm, api, configuration, [LABEL], 1, form)
    before = inference_seconds(server, model)
    results, seconds = run_pass(dataset, images, api, configuration, [LABEL], 1, form)
    detecting = inference_seconds(server, model) - before  # the same requests' detection time
    figures = tally(images, results, LABEL).figures()
    return {
        "model": model,
        "coverage_recall": figures["coverage_recall"],
        "over_anonymisation": figures["over_anonymisation"],
        "false_alarms_per_image": figures["false_alarms_per_image"],
        "images_per_second": len(images) / seconds,
        "ms_per_image": 1000 * seconds / len(images),
        "detection_ms_per_image": 1000 * detecting / len(images),
        "rest_ms_per_image": 1000 * (seconds - detecting) / len(images),
    }


def load_cost(dataset: Path) -> str:
    """What `yolo` adds to the detection server, measured in this process: start-up (reading the ONNX
    network) and memory, then the first image of the set (compiling the network for its sizes)."""
    from inference_detection.objects import YoloObjects

    image = read_image((dataset / load_dataset(dataset, 1)["images"][0]["file"]).read_bytes(), sys.maxsize)[0]
    model, memory, start = YoloObjects(), resident_mb(os.getpid()), time.perf_counter()
    model.load(default_models_dir())
    loaded, loaded_memory = time.perf_counter() - start, resident_mb(os.getpid())
    model.detect(image, model.parse_params({}))
    first = time.perf_counter() - start - loaded
    return (
        f"yolo in the detection server: start-up {loaded:.2f} s and {loaded_memory - memory:.0f} MB; the first "
        f"{image.shape[1]}x{image.shape[0]} image {first:.2f} s more (compiling),"
        f" {resident_mb(os.getpid()) - memory:.0f} MB in all"
    )


def through_api(work: Path, name: str) -> Any:
    """An API of its own (data in `work/name`), so that its one person model answers the default entry."""
    return running(["serve-api", "--data-dir", str(work / name)], "/health", work / f"{name}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=PROJECT_ROOT.parent / "shared/data/persons_tud_campus")
    parser.add_argument("--far", action="store_true", help="also the 3x3 and 4x4 mosaics of the set (far pedestrians)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    fetch_models(default_models_dir())
    cpu = describe_machine(default_models_dir())
    print(cpu)
    print(load_cost(args.dataset))
    work = Path(tempfile.mkdtemp())
    sets = [args.dataset]
    if args.far:
        sets += [mosaic(args.dataset, work / f"far{side}", side) for side in (3, 4)]
    rows: dict[str, list[dict[str, Any]]] = {}
    hog_port = free_port()
    hog_log = (work / "hog.log").open("w")
    hog = subprocess.Popen(
        [sys.executable, "-m", "bench.hog_person", str(hog_port)], cwd=PROJECT_ROOT, stdout=hog_log, stderr=hog_log
    )
    try:
        hog_url = f"http://127.0.0.1:{hog_port}"
        wait_until_ready(f"{hog_url}/v2/health/ready", hog, log=work / "hog.log")
        with ExitStack() as stack:
            ours_url = stack.enter_context(running(["serve-detection"], "/v2/health/ready", work / "det.log"))
            detectors = []
            for name, server, model in (("ours", ours_url, "yolo"), ("hog", hog_url, "hog_person")):
                (work / name).mkdir()
                api = stack.enter_context(through_api(work, name))
                httpx.post(f"{api}/set_url", data={"url": server}, timeout=120).raise_for_status()
                detectors.append((name, api, server, model))
            # Set by set, ours then HOG: both meet the same load on a shared machine.
            for dataset in sets:
                for name, api, server, model in detectors:
                    try:
                        row = measure(api, server, model, dataset)
                    except EvaluationError as exc:
                        raise SystemExit(str(exc)) from exc
                    rows.setdefault(dataset.name, []).append({"name": name, **row})
    finally:
        stop(hog)
        hog_log.close()

    print(f"{'set':<22}{'detector':<10}{'coverage':>9}{'over-anon':>10}{'images/s':>9}{'detect ms':>10}{'rest ms':>8}")
    for dataset, lines in rows.items():
        for line in lines:
            print(
                f"{dataset:<22}{line['name']:<10}{line['coverage_recall']:>9.3f}{line['over_anonymisation']:>10.2f}"
                f"{line['images_per_second']:>9.2f}{line['detection_ms_per_image']:>10.1f}{line['rest_ms_per_image']:>8.1f}"
            )
    main_rows = {line["name"]: line for line in rows[args.dataset.name]}
    ours, hog_row = main_rows["ours"], main_rows["hog"]
    speed = ours["images_per_second"] / hog_row["images_per_second"]
    print(
        f"{args.dataset.name}: coverage {ours['coverage_recall']:.3f} (target >= {COVERAGE_TARGET}), "
        f"over-anonymisation {ours['over_anonymisation']:.2f} (target <= {OVER_BOUND}), "
        f"speed {speed:.2f}x HOG's (target >= {SPEED_TARGET:g}x)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu, "rows": rows, "speed_ratio": speed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
