"""Planning a configuration against the registry, without servers."""

import json

import pytest

from anonymization_api.configuration import plan
from anonymization_api.errors import InvalidConfiguration
from anonymization_api.registry import Registry


def face_model(threshold: float) -> dict:
    return {"task": "detection", "labels": ["face"], "defaults": {"score_threshold": threshold}, "presets": {}}


def test_model_defaults_come_from_a_replica_that_is_up(tmp_path):
    # A replica that is down keeps what it said when it was last seen, perhaps an older version.
    stale, live = "http://127.0.0.1:1/", "http://127.0.0.1:2/"
    path = tmp_path / "url_configuration.json"
    servers = {
        stale: {"protocol": "oip", "models": {"centerface": face_model(0.2)}},
        live: {"protocol": "oip", "models": {"centerface": face_model(0.1)}},
    }
    path.write_text(json.dumps({"urls": [stale, live], "servers": servers}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    registry.get(live).available = True
    entry = {
        "class_name": "face",
        "inference_type": "detection",
        "anonymization_technique": "blurring",
        "anonymization_degree": 1,
    }
    the_plan = plan({"sensitive_info": [entry]}, registry)
    assert [server.url for server in the_plan.entries[0].servers] == [live, stale]
    assert list(the_plan.calls.values()) == [{"score_threshold": 0.1}]


def test_unknown_fields_are_warnings_with_a_suggestion(tmp_path):
    path = tmp_path / "url_configuration.json"
    servers = {"http://127.0.0.1:1/": {"protocol": "oip", "models": {"centerface": face_model(0.1)}}}
    path.write_text(json.dumps({"urls": list(servers), "servers": servers}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    entry = {
        "class_name": "face",
        "inference_type": "detection",
        "anonymization_technique": "blurring",
        "anonymization_degree": 1,
        "mask_scal": 2,
        "comment": "BMW ignores what it does not know",
    }
    the_plan = plan({"sensitive_info": [entry]}, registry)
    assert len(the_plan.entries) == 1 and the_plan.entries[0].info.mask_scale is None
    first, second = the_plan.warnings
    assert "'mask_scal'" in first and "did you mean 'mask_scale'" in first
    assert "'comment'" in second


def two_face_models(tmp_path) -> Registry:
    path = tmp_path / "url_configuration.json"
    first, second = "http://127.0.0.1:1/", "http://127.0.0.1:2/"
    servers = {
        first: {"protocol": "oip", "models": {"centerface": face_model(0.1)}},
        second: {"protocol": "oip", "models": {"retinaface": face_model(0.3)}},
    }
    path.write_text(json.dumps({"urls": [first, second], "servers": servers}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    return registry


FACE = {
    "class_name": "face",
    "inference_type": "detection",
    "anonymization_technique": "blurring",
    "anonymization_degree": 1,
}


def test_several_models_for_a_label_use_the_default_not_a_failure(tmp_path):
    registry = two_face_models(tmp_path)
    first = plan({"sensitive_info": [FACE]}, registry)
    assert first.entries[0].model.name == "centerface" and "the first registered" in first.warnings[0]
    chosen = plan({"sensitive_info": [FACE]}, registry, defaults={"face": "retinaface"})
    assert chosen.entries[0].model.name == "retinaface" and not chosen.warnings
    named = plan({"sensitive_info": [{**FACE, "model_name": "retinaface"}]}, registry)
    assert named.entries[0].model.name == "retinaface" and not named.warnings


def test_model_parameters_the_model_does_not_take_are_named(tmp_path):
    registry = two_face_models(tmp_path)
    with pytest.raises(InvalidConfiguration) as refused:
        plan({"sensitive_info": [{**FACE, "model_name": "centerface", "model_parameters": {"scale": 2}}]}, registry)
    (problem,) = refused.value.problems
    assert problem["field"] == "model_parameters" and problem["choices"] == ["score_threshold"]


def test_a_photo_gets_the_models_photo_preset_unless_its_entry_names_one(tmp_path):
    path = tmp_path / "url_configuration.json"
    presets = {"photo": {"score_threshold": 0.08}, "balanced": {"score_threshold": 0.1}}
    centerface = {**face_model(0.1), "presets": presets}
    servers = {
        "http://127.0.0.1:1/": {"protocol": "oip", "models": {"centerface": centerface}},
        "http://127.0.0.1:2/": {"protocol": "oip", "models": {"retinaface": face_model(0.3)}},
    }
    path.write_text(json.dumps({"urls": list(servers), "servers": servers}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    entries = [FACE, {**FACE, "preset": "balanced"}, {**FACE, "model_name": "retinaface"}]
    photo = plan({"sensitive_info": entries}, registry, photo=True)
    assert [entry.info.preset for entry in photo.entries] == ["photo", "balanced", None]
    assert list(photo.calls.values()) == [
        {"preset": "photo", "score_threshold": 0.08},  # the preset's threshold, not the model's default
        {"preset": "balanced", "score_threshold": 0.1},
        {"score_threshold": 0.3},  # a model without a photo preset keeps its defaults
    ]
    # a video's frames keep the defaults
    video = plan({"sensitive_info": entries}, registry)
    assert [entry.info.preset for entry in video.entries] == [None, "balanced", None]
