"""The INT8 CenterFace: made at `models fetch` from generated calibration images, chosen by
$ANONYMIZER_INT8 and the machine's precision, and finding the faces the float network finds."""

import json
import shutil

import numpy as np
import pytest

from inference_common.errors import ModelFetchError
from inference_common.models import CENTERFACE, default_models_dir
from inference_common.quantisation import calibration_images, int8_model, int8_paths, int8_ready
from inference_detection.centerface import CenterFace
from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, grace_hopper, iou


def test_calibration_images_are_the_same_on_every_machine():
    first, again = calibration_images(6), calibration_images(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert {image.shape for image in first} == {(768, 1024, 3)}
    assert not np.array_equal(first[0], first[1])


def test_the_install_made_an_up_to_date_int8_network():
    assert int8_ready(default_models_dir())


@pytest.fixture
def float_only_models(tmp_path):
    """A models folder with the float CenterFace alone."""
    target = CENTERFACE.path_in(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(CENTERFACE.path_in(default_models_dir()), target)
    return tmp_path


def test_int8_is_chosen_where_the_cpu_infers_in_f32(monkeypatch):
    monkeypatch.delenv("ANONYMIZER_INT8", raising=False)
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(default_models_dir()) == int8_paths(default_models_dir())[0]
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "bf16")
    assert int8_model(default_models_dir()) is None
    monkeypatch.setenv("ANONYMIZER_INT8", "on")
    assert int8_model(default_models_dir()) is not None
    monkeypatch.setenv("ANONYMIZER_INT8", "off")
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(default_models_dir()) is None


def test_a_missing_or_stale_int8_network_is_not_used(monkeypatch, float_only_models):
    monkeypatch.setenv("ANONYMIZER_INFERENCE_PRECISION", "f32")
    assert int8_model(float_only_models) is None  # auto: the float network, with a warning
    monkeypatch.setenv("ANONYMIZER_INT8", "on")
    with pytest.raises(ModelFetchError, match="anonymizer models fetch"):
        int8_model(float_only_models)
    # an INT8 network made from another CenterFace (its record names another checksum) is stale
    for source in int8_paths(default_models_dir()):
        shutil.copy(source, int8_paths(float_only_models)[0].parent / source.name)
    shutil.copy(int8_paths(default_models_dir())[0].with_suffix(".bin"), int8_paths(float_only_models)[0].parent)
    assert int8_ready(float_only_models)
    record = int8_paths(float_only_models)[1]
    record.write_text(json.dumps({**json.loads(record.read_text()), "source_sha256": "0" * 64}))
    assert not int8_ready(float_only_models)


def test_an_unknown_setting_names_the_choices(monkeypatch):
    monkeypatch.setenv("ANONYMIZER_INT8", "yes")
    with pytest.raises(ValueError, match="auto, on, off"):
        int8_model(default_models_dir())


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
