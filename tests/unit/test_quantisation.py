"""The INT8 networks (CenterFace, YOLOv4-tiny): made at `models fetch` from generated calibration
images, chosen by $ANONYMIZER_INT8 and each network's rule, and finding what the float network finds."""

import json
import shutil

import cv2
import numpy as np
import pytest

from anonymizer_shared.boxes import iou_matrix
from inference_common.engine import Engine
from inference_common.errors import ModelFetchError
from inference_common.models import CENTERFACE, default_models_dir
from inference_common.quantisation import (
    CENTERFACE_INT8,
    QUANTISED,
    YOLO_INT8,
    face_calibration,
    first_convolutions,
    int8_model,
    street_calibration,
)
from inference_detection.centerface import CenterFace
from inference_detection.objects import YoloObjects, decode
from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, grace_hopper, iou, wheel_photo


def test_calibration_images_are_the_same_on_every_machine():
    first, again = face_calibration(default_models_dir(), 6), face_calibration(default_models_dir(), 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert {image.shape for image in first} == {(768, 1024, 3)}
    assert not np.array_equal(first[0], first[1])
    streets = street_calibration(default_models_dir(), 6)
    assert all(np.array_equal(a, b) for a, b in zip(streets, street_calibration(default_models_dir(), 6), strict=True))
    assert {image.shape for image in streets} == {(448, 608, 3)}


@pytest.mark.parametrize("network", QUANTISED, ids=lambda network: network.name)
def test_the_install_made_an_up_to_date_int8_network(network):
    assert network.ready(default_models_dir())


def test_int8_centerface_keeps_its_first_convolutions_in_float():
    """The stem's convolutions read their inputs in float (no FakeQuantize before them); the
    convolution after them reads 8-bit activations."""
    import openvino as ov

    model = ov.Core().read_model(CENTERFACE_INT8.paths(default_models_dir())[0])
    count = CENTERFACE_INT8.float_first_convolutions
    names = first_convolutions(model, count + 1)
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}

    def reads_8_bits(name: str) -> bool:
        return by_name[name].input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"

    assert count == 3
    assert [reads_8_bits(name) for name in names] == [False, False, False, True]


def test_openvino_runs_every_convolution_after_the_stem_in_8_bits():
    """Depthwise convolutions included: quantised from the ONNX graph as it is read, their weights
    came per group and kernel column, which OpenVINO cannot run in INT8, so it ran them in float."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(CENTERFACE_INT8.paths(default_models_dir())[0])
    stem = set(first_convolutions(model, CENTERFACE_INT8.float_first_convolutions))
    model.reshape([1, 3, 64, 64])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = {
        op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if "Convolution" in op.get_rt_info()["layerType"].astype(str)
    }
    depthwise = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "GroupConvolution"]
    assert len(precisions) > 50 and len(set(depthwise) - stem) >= 15
    assert {name for name, precision in precisions.items() if precision not in ("u8", "i8")} == stem


@pytest.fixture
def float_only_models(tmp_path):
    """A models folder with the float CenterFace alone."""
    target = CENTERFACE.path_in(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(CENTERFACE.path_in(default_models_dir()), target)
    return tmp_path


def test_auto_follows_each_networks_rule(monkeypatch):
    models = default_models_dir()
    monkeypatch.delenv("ANONYMIZER_INT8", raising=False)
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(CENTERFACE_INT8, models) == CENTERFACE_INT8.paths(models)[0]
    assert int8_model(YOLO_INT8, models) == YOLO_INT8.paths(models)[0]
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "bf16")
    assert int8_model(CENTERFACE_INT8, models) is None  # CenterFace: INT8 only where the CPU infers in f32
    assert int8_model(YOLO_INT8, models) == YOLO_INT8.paths(models)[0]  # YOLOv4-tiny: everywhere
    monkeypatch.setenv("ANONYMIZER_INT8", "on")
    assert int8_model(CENTERFACE_INT8, models) is not None
    monkeypatch.setenv("ANONYMIZER_INT8", "off")
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(CENTERFACE_INT8, models) is None
    assert int8_model(YOLO_INT8, models) is None


def test_a_missing_or_stale_int8_network_is_not_used(monkeypatch, float_only_models):
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(CENTERFACE_INT8, float_only_models) is None  # auto: the float network, with a warning
    monkeypatch.setenv("ANONYMIZER_INT8", "on")
    with pytest.raises(ModelFetchError, match="anonymizer models fetch"):
        int8_model(CENTERFACE_INT8, float_only_models)
    # an INT8 network made from another CenterFace (its record names another checksum) is stale
    network, record = CENTERFACE_INT8.paths(default_models_dir())
    for source in (network, network.with_suffix(".bin"), record):
        shutil.copy(source, CENTERFACE_INT8.paths(float_only_models)[0].parent / source.name)
    assert CENTERFACE_INT8.ready(float_only_models)
    record = CENTERFACE_INT8.paths(float_only_models)[1]
    record.write_text(json.dumps({**json.loads(record.read_text()), "source_sha256": "0" * 64}))
    assert not CENTERFACE_INT8.ready(float_only_models)


@pytest.mark.parametrize("precision", ["bf16", "f32"])
def test_balanced_runs_the_int8_network_on_every_cpu(monkeypatch, precision):
    """`network: int8` (the balanced preset) runs the INT8 twin also where `auto` runs float, and
    ANONYMIZER_INT8=off still rules it out. Engines are only made here, not compiled."""
    monkeypatch.delenv("ANONYMIZER_INT8", raising=False)
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", precision)
    model = CenterFace()
    model.load(default_models_dir())

    def network(params: dict) -> str:
        return model.engine_for(model.parse_params(params)).network

    assert network({"preset": "balanced"}) == network({"network": "int8"}) == "centerface_int8"
    assert network({}) == ("centerface" if precision == "bf16" else "centerface_int8")
    assert network({"preset": "photo"}) == network({})
    assert (model.int8_engine is model.engine) == (precision == "f32")  # one engine where auto runs INT8 already
    monkeypatch.setenv("ANONYMIZER_INT8", "off")
    model.load(default_models_dir())
    assert network({"preset": "balanced"}) == network({}) == "centerface"
    assert model.int8_engine is model.engine  # no second float engine


@pytest.mark.parametrize("precision", ["bf16", "f32"])
def test_a_missing_int8_network_is_reported_once(monkeypatch, caplog, float_only_models, precision):
    """CenterFace asks for its INT8 twin twice where `auto` runs it (for `auto` and `network: int8`)."""
    monkeypatch.delenv("ANONYMIZER_INT8", raising=False)
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", precision)
    model = CenterFace()
    model.load(float_only_models)
    assert model.int8_engine is model.engine
    assert caplog.text.count("no INT8 CenterFace") == 1


def test_an_unknown_setting_names_the_choices(monkeypatch):
    monkeypatch.setenv("ANONYMIZER_INT8", "yes")
    with pytest.raises(ValueError, match="auto, on, off"):
        int8_model(CENTERFACE_INT8, default_models_dir())


@pytest.mark.parametrize(("image", "face"), [(grace_hopper, GRACE_HOPPER_FACE), (astronaut, ASTRONAUT_FACE)])
def test_int8_finds_the_face_the_float_network_finds(monkeypatch, image, face):
    found = {}
    for setting in ("off", "on"):
        monkeypatch.setenv("ANONYMIZER_INT8", setting)
        model = CenterFace()
        model.load(default_models_dir())
        dets = model.detect(image(), model.parse_params({"score_threshold": 0.5}))
        assert len(dets) == 1 and iou(dets[0, :4], face) > 0.5
        found[setting] = dets[0]
    assert model.engine_name == "openvino-int8"
    assert iou(found["off"][:4], found["on"][:4]) > 0.9
    assert abs(found["off"][4] - found["on"][4]) < 0.1


@pytest.mark.parametrize("photo", [lambda: wheel_photo("bus.jpg"), lambda: wheel_photo("zidane.jpg"), grace_hopper])
def test_int8_yolo_finds_what_the_float_network_finds(monkeypatch, photo):
    """Every object the float network scores 0.3 or more, INT8 finds in the same place, under the same
    label; Grace Hopper's portrait is no calibration image."""
    found = {}
    for setting in ("off", "on"):
        monkeypatch.setenv("ANONYMIZER_INT8", setting)
        model = YoloObjects()
        model.load(default_models_dir())
        found[setting] = model.detect(photo(), model.parse_params({"score_threshold": 0.3}))
    assert model.engine_name == "openvino-int8"
    reference, quantised = found["off"], found["on"]
    assert len(reference) >= 1
    overlap = iou_matrix(reference[:, :4], quantised[:, :4])
    overlap[reference[:, 5][:, None] != quantised[:, 5][None, :]] = 0
    assert (overlap.max(axis=1) > 0.8).all()


@pytest.mark.parametrize("size", [(608, 448), (1024, 1344), (1920, 1088)])
def test_int8_yolo_boxes_hold_at_every_input_size(size):
    """The network decodes its boxes itself: quantised, coordinates beyond the calibration size
    (608x448) were clipped (a person at y 776 of 1344 came out at 432), so that decoding stays float."""
    image = cv2.resize(wheel_photo("bus.jpg"), size, interpolation=cv2.INTER_AREA)[None]
    models, persons = default_models_dir(), {0: [0]}
    reference = decode(*(o[0] for o in Engine(YOLO_INT8.source(models), YOLO_INT8.pixels).infer(image)), 0.5, persons)
    quantised = decode(*(o[0] for o in Engine(YOLO_INT8.paths(models)[0], YOLO_INT8.pixels).infer(image)), 0.3, persons)
    assert len(reference) >= 3
    assert (iou_matrix(reference[:, :4], quantised[:, :4]).max(axis=1) > 0.8).all()
