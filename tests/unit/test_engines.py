"""Both engines give the same answers: ONNX Runtime (the GPU path, here on its CPU provider) and OpenVINO."""

import numpy as np
import pytest

from inference_common.engine import Engine, PixelFormat, make_engine
from inference_common.models import CENTERFACE, default_models_dir
from inference_common.ppocr import TextDetector
from inference_detection.centerface import CenterFace
from tests.support.images import GRACE_HOPPER_FACE, grace_hopper, iou, text_image

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime is the optional GPU engine")


def test_onnxruntime_finds_the_same_face_as_openvino(monkeypatch):
    monkeypatch.setenv("ANONYMIZER_INT8", "off")  # the same float network on both (INT8 is OpenVINO's own)
    found = {}
    for engine in ("openvino", "onnxruntime"):
        monkeypatch.setenv("ANONYMIZER_ENGINE", engine)
        model = CenterFace()
        model.load(default_models_dir())
        dets = model.detect(grace_hopper(), model.parse_params({"score_threshold": 0.5}))
        assert len(dets) == 1 and iou(dets[0, :4], GRACE_HOPPER_FACE) > 0.6
        found[engine] = dets[0]
    assert iou(found["openvino"][:4], found["onnxruntime"][:4]) > 0.95
    assert abs(found["openvino"][4] - found["onnxruntime"][4]) < 0.05


def test_both_engines_normalise_pixels_alike(monkeypatch):
    # PaddleOCR's detector takes BGR scaled to -1..1: OpenVINO does that in the compiled network,
    # ONNX Runtime in numpy; a wrong channel order, mean or scale would change the text map.
    image, _ = text_image()
    maps = {}
    for engine in ("openvino", "onnxruntime"):
        monkeypatch.setenv("ANONYMIZER_ENGINE", engine)
        maps[engine] = TextDetector(default_models_dir()).probability(image, 960)
    text = maps["onnxruntime"] > 0.3
    assert text.mean() > 0.01
    assert np.abs(maps["openvino"] - maps["onnxruntime"]).mean() < 0.02
    assert ((maps["openvino"] > 0.3) == text).mean() > 0.98


def test_engine_choice(monkeypatch):
    path = CENTERFACE.path_in(default_models_dir())
    monkeypatch.setenv("ANONYMIZER_ENGINE", "auto")  # no GPU here: OpenVINO
    assert isinstance(make_engine(path, PixelFormat()), Engine)
    monkeypatch.setenv("ANONYMIZER_ENGINE", "tensorflow")
    with pytest.raises(ValueError, match="openvino, onnxruntime, auto"):
        make_engine(path, PixelFormat())
    images = np.zeros((2, 64, 96, 3), np.uint8)
    monkeypatch.setenv("ANONYMIZER_ENGINE", "onnxruntime")
    outputs = make_engine(path, PixelFormat()).infer(images)
    assert outputs[0].shape == (2, 1, 16, 24)  # batch and size follow the input, not the declared 10x32x32


def test_the_cpu_description_names_the_machine_and_the_precision():
    from inference_common.engine import cpu_description

    text = cpu_description()
    assert "OpenVINO capabilities: " in text and "FP32" in text and "inference precision: " in text
