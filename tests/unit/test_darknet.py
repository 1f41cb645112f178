"""The Darknet-to-ONNX converter, held to an independent implementation: OpenCV 4.10's own Darknet
importer, whose layer outputs and detections `tests/data/record_darknet_reference.py` recorded."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest

from anonymizer_shared.boxes import iou_matrix
from inference_common import darknet
from inference_common.engine import Engine, OnnxRuntimeEngine, PixelFormat
from inference_common.models import default_models_dir, fetch_models, yolo_paths
from inference_detection.objects import decode

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "darknet_reference.json").read_text())
SIZE = 416


@pytest.fixture(scope="module")
def files() -> tuple[Path, Path, Path]:
    fetch_models(default_models_dir())
    return yolo_paths(default_models_dir())


def photo(files, name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(files[0].with_name(name))), cv2.COLOR_BGR2RGB)


def stretched(image: np.ndarray) -> np.ndarray:
    """The photo as the reference fed it: bilinear to SIZE x SIZE (Darknet stretches, no letterbox)."""
    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def test_every_layer_matches_opencv(files):
    cfg, weights, _ = files
    model = darknet.darknet_to_onnx(cfg.read_text(), weights.read_bytes())
    layer_outputs = {
        node.output[0].split("_")[1]: node.output[0] for node in model.graph.node if node.output[0].startswith("layer_")
    }
    for name in layer_outputs.values():
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    blob = PixelFormat(scale=255.0).blob(stretched(photo(files, "bus.jpg"))[None])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {darknet.INPUT: blob}), strict=True))
    assert set(REFERENCE["layers"]) <= set(layer_outputs)  # every layer OpenCV exposes has its twin here
    for index, expected in REFERENCE["layers"].items():
        ours = outputs[layer_outputs[index]]
        assert list(ours.shape) == expected["shape"], index
        scale = max(1.0, abs(expected["mean"]) + expected["std"])
        assert ours.mean() == pytest.approx(expected["mean"], abs=2e-3 * scale), index
        assert ours.std() == pytest.approx(expected["std"], abs=2e-3 * scale), index
        sampled = ours.reshape(-1)[expected["positions"]]
        assert np.abs(sampled - np.asarray(expected["values"])).max() < 0.02, index


@pytest.mark.parametrize("engine", [Engine, OnnxRuntimeEngine], ids=["openvino", "onnxruntime"])
@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_detections_on_the_wheels_photos_match_opencv(files, name, engine):
    """The served network (the converted ONNX on OpenVINO, as our CPU servers run it, and on ONNX Runtime,
    as Triton does) and our decoding find what OpenCV 4.10 finds."""
    image = photo(files, name)
    height, width = image.shape[:2]
    net_boxes, scores = engine(files[2], PixelFormat(scale=255.0)).infer(stretched(image)[None])
    every_class = {coco: [] for coco in range(scores.shape[2])}
    ours = decode(net_boxes[0], scores[0], REFERENCE["threshold"], every_class)
    ours[:, [0, 2]] *= width / SIZE
    ours[:, [1, 3]] *= height / SIZE
    expected = np.asarray(REFERENCE["detections"][name], np.float32)
    assert len(ours) == len(expected)
    iou = iou_matrix(expected[:, :4], ours[:, :4])
    match = iou.argmax(axis=1)
    assert (iou.max(axis=1) > 0.97).all()
    np.testing.assert_array_equal(ours[match, 5], expected[:, 5])
    np.testing.assert_allclose(ours[match, 4], expected[:, 4], atol=0.02)  # bf16 CPUs infer in bf16
    if name == "bus.jpg":  # what is in the photo: four persons and the bus
        assert (expected[:, 5] == 0).sum() == 3 and 5 in expected[:, 5]


def test_fetch_builds_the_network_with_its_provenance(files):
    cfg, weights, network = files
    record = json.loads(darknet.record_path(network).read_text())
    assert record["weights_sha256"] == "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
    assert record["converter"] == darknet.CONVERTER_VERSION and record["onnx"] == onnx.__version__
    assert darknet.is_converted(cfg, weights, network)
    onnx.checker.check_model(onnx.load(str(network)))


def test_a_stale_or_foreign_network_is_made_again(files, tmp_path):
    cfg, weights, _ = files
    network = tmp_path / "yolo.onnx"
    darknet.convert(cfg, weights, network)
    made = network.stat().st_mtime_ns
    darknet.convert(cfg, weights, network)
    assert network.stat().st_mtime_ns == made  # up to date: left alone
    darknet.record_path(network).write_text(json.dumps({**darknet.provenance(cfg, weights), "converter": 0}))
    assert not darknet.is_converted(cfg, weights, network)
    darknet.convert(cfg, weights, network)
    assert darknet.is_converted(cfg, weights, network)


def test_weights_that_do_not_fit_the_cfg_are_refused(files, tmp_path):
    cfg, weights, _ = files
    short = tmp_path / "short.weights"
    short.write_bytes(weights.read_bytes()[:-400])
    with pytest.raises(darknet.ModelFetchError, match=r"do not belong together|end before"):
        darknet.convert(cfg, short, tmp_path / "short.onnx")
    assert not (tmp_path / "short.onnx").exists()


def test_an_unsupported_layer_is_named():
    with pytest.raises(ValueError, match=r"\[shortcut\] is not supported"):
        darknet.darknet_to_onnx("[net]\nchannels=3\n[shortcut]\nfrom=-1\n", bytes(20))
