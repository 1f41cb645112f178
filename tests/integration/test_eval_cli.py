"""`anonymizer eval` against the real stack, on a tiny data set of packaged portraits built here."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, grace_hopper
from tests.support.servers import PROJECT_ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def face_box(box, ignore=False, dx=0, dy=0) -> dict:
    x1, y1, x2, y2 = box
    return {"label": "face", "x1": x1 + dx, "y1": y1 + dy, "x2": x2 + dx, "y2": y2 + dy, "ignore": ignore}


def write_dataset(root) -> None:
    """Three images: each portrait alone, and both side by side with the astronaut's face ignored."""
    (root / "images").mkdir()
    hopper, nasa = grace_hopper(), astronaut()
    pair = np.zeros((600, 1024, 3), np.uint8)
    pair[:, :512], pair[:512, 512:] = hopper, nasa
    entries = [
        ("hopper.jpg", hopper, [face_box(GRACE_HOPPER_FACE)]),
        ("astronaut.png", nasa, [face_box(ASTRONAUT_FACE)]),
        ("pair.jpg", pair, [face_box(GRACE_HOPPER_FACE), face_box(ASTRONAUT_FACE, ignore=True, dx=512)]),
    ]
    images = []
    for name, pixels, boxes in entries:
        Image.fromarray(pixels).save(root / "images" / name)
        images.append({"file": f"images/{name}", "width": pixels.shape[1], "height": pixels.shape[0], "boxes": boxes})
    annotations = {"dataset": "portraits", "classes": ["face"], "images": images}
    (root / "annotations.json").write_text(json.dumps(annotations))


def anonymizer(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "anonymizer_tools.cli", "--log-level", "warning", *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def test_eval_reports_full_coverage_and_writes_report_and_plot(api_url, tmp_path):
    write_dataset(tmp_path)
    report, plot = tmp_path / "report.json", tmp_path / "recall.png"
    done = anonymizer("eval", str(tmp_path), "--api", api_url, "--report", str(report), "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    face_line = next(line for line in done.stdout.splitlines() if line.startswith("face"))
    assert face_line.split()[1:3] == ["3", "1.000"]  # three counted faces, all hidden

    figures = json.loads(report.read_text())["classes"]["face"]
    assert figures["boxes"] == 3
    assert figures["coverage_recall"] == 1.0
    assert figures["iou_recall"] == 1.0
    assert figures["false_alarms_per_image"] < 1  # the ignored astronaut of the pair is not one
    assert 0.5 < figures["over_anonymisation"] < 1.3
    sweep = figures["sweep"]
    assert sweep[0]["threshold"] == 0.05 and sweep[-1]["threshold"] == 0.95
    assert [point["coverage_recall"] for point in sweep] == sorted((p["coverage_recall"] for p in sweep), reverse=True)

    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(plot) as image:
        image.verify()


def test_eval_fails_clearly_on_a_bad_preset_and_a_missing_data_set(api_url, tmp_path):
    write_dataset(tmp_path)
    done = anonymizer("eval", str(tmp_path), "--api", api_url, "--preset", "no-such-preset", "--no-sweep")
    assert done.returncode == 1
    assert "no-such-preset" in done.stderr and "422" in done.stderr
    missing = anonymizer("eval", str(tmp_path / "nowhere"), "--api", api_url)
    assert missing.returncode == 1 and "annotations.json" in missing.stderr


def test_eval_at_a_detection_size(api_url, tmp_path):
    write_dataset(tmp_path)
    report = tmp_path / "report.json"
    done = anonymizer(
        "eval", str(tmp_path), "--api", api_url, "--no-sweep", "--detection-size", "320x300", "--report", str(report)
    )
    assert done.returncode == 0, done.stderr
    content = json.loads(report.read_text())
    assert content["detection_size"] == "320x300"
    assert content["classes"]["face"]["coverage_recall"] == 1.0  # boxes come back in the images' own pixels
    refused = anonymizer("eval", str(tmp_path), "--api", api_url, "--no-sweep", "--detection-size", "small")
    assert refused.returncode == 1 and "WIDTHxHEIGHT" in refused.stderr
