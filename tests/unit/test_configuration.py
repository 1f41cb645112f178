"""Planning a configuration against the registry, without servers."""

import json

from anonymization_api.configuration import plan
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
