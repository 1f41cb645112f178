"""Records `darknet_reference.json`: what OpenCV 4.10's own Darknet importer computes for YOLOv4-tiny,
the independent reference `tests/unit/test_darknet.py` holds our converted ONNX network to.

OpenCV 4.10 is not a dependency of the project (OpenCV 5 no longer reads Darknet files): run this
in a virtual environment of its own, from the project root, after `anonymizer models fetch`:

    python3.11 -m venv /tmp/cv410 && /tmp/cv410/bin/pip install opencv-python-headless==4.10.0.84 numpy==1.26.4
    /tmp/cv410/bin/python tests/data/record_darknet_reference.py models/yolov4_tiny

Recorded: per Darknet layer, on `bus.jpg` resized (bilinear) to 416x416, its output's shape, mean,
standard deviation and the values at 64 fixed positions; and on both photos of the wheel, the
detections (score = objectness x class >= 0.25, per-class NMS at IoU 0.45) in image pixels.
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = 416
THRESHOLD, NMS_IOU = 0.25, 0.45
SAMPLES = 64


def blob_of(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB in 0..1, NCHW, stretched to SIZE x SIZE as Darknet does; and the image's (height, width)."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return (resized.transpose(2, 0, 1)[None].astype(np.float32) / 255), image.shape[:2]


def opencv_name(index: int, kind: str, names: set[str]) -> str | None:
    """The OpenCV layer holding Darknet layer `index`'s output (its activation, for a convolution)."""
    candidates = {
        "convolutional": [f"leaky_{index + 1}", f"conv_{index}"],
        "maxpool": [f"pool_{index}"],
        "route": [f"slice_{index}", f"concat_{index}", f"identity_{index}"],
        "upsample": [f"upsample_{index}"],
    }.get(kind, [])
    return next((name for name in candidates if name in names), None)


def main(folder: Path) -> None:
    net = cv2.dnn.readNetFromDarknet(str(folder / "yolov4-tiny.cfg"), str(folder / "yolov4-tiny.weights"))
    kinds = [
        line.strip()[1:-1] for line in (folder / "yolov4-tiny.cfg").read_text().splitlines() if line.startswith("[")
    ]
    kinds = kinds[1:]  # [net]
    layer_names = list(net.getLayerNames())
    blob, _ = blob_of(folder / "bus.jpg")
    net.setInput(blob)
    outputs = dict(zip(layer_names, net.forward(layer_names), strict=True))
    rng = np.random.default_rng(0)
    layers = {}
    for index, kind in enumerate(kinds):
        name = opencv_name(index, kind, set(layer_names))
        if name is None:
            continue
        values = outputs[name].reshape(-1)
        positions = np.sort(rng.choice(values.size, SAMPLES, replace=False))
        layers[str(index)] = {
            "kind": kind,
            "opencv_layer": name,
            "shape": list(outputs[name].shape),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "positions": positions.tolist(),
            "values": values[positions].tolist(),
        }
    detections = {}
    # A network of its own: one that has forwarded to every layer answers wrong boxes after (OpenCV 4.10).
    net = cv2.dnn.readNetFromDarknet(str(folder / "yolov4-tiny.cfg"), str(folder / "yolov4-tiny.weights"))
    for photo in ("bus.jpg", "zidane.jpg"):
        blob, (height, width) = blob_of(folder / photo)
        net.setInput(blob)
        rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
        found = []
        for row in rows:  # cx, cy, w, h (0..1), objectness, objectness x class per class
            for coco in np.nonzero(row[5:] >= THRESHOLD)[0]:
                cx, cy, w, h = row[:4] * [width, height, width, height]
                found.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, float(row[5 + coco]), int(coco)])
        found = np.array(found).reshape(-1, 6)
        xywh = np.stack([found[:, 0], found[:, 1], found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]], axis=1)
        keep = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), found[:, 4].tolist(), found[:, 5].astype(int).tolist(), THRESHOLD, NMS_IOU
        )
        detections[photo] = [[round(float(v), 3) for v in found[i]] for i in np.asarray(keep).reshape(-1)]
    record = {
        "reference": f"OpenCV {cv2.__version__} cv2.dnn.readNetFromDarknet",
        "input": f"bus.jpg, RGB, bilinear to {SIZE}x{SIZE}, / 255",
        "layers": layers,
        "threshold": THRESHOLD,
        "nms_iou": NMS_IOU,
        "detections": detections,
    }
    out = Path(__file__).with_name("darknet_reference.json")
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
