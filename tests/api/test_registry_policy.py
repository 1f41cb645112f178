"""/set_url in-process (`TestClient(create_app(settings))`) against loopback listeners that record
every request: what the URL policy refuses reaches nothing, aliases are registered as the address
they stand for, errors do not tell open ports from closed ones, answers of any shape or size end in
a 4xx, and the registry holds a bounded number of servers."""

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from tests.support.api import LOOPBACK, face_entry
from tests.support.images import encode, grace_hopper
from tests.support.listeners import (
    OIP_READY,
    Listener,
    answer_json,
    endless,
    hang_up,
    head,
    oip_model,
    redirect,
    silent_port,
    trickle,
)
from tests.support.servers import free_port

NOT_REACHABLE = "is not reachable (no inference server answered there)"


@contextmanager
def api(tmp_path, **settings) -> Iterator[TestClient]:
    options = {"discovery_timeout_s": 1.0, "rediscover_interval_s": 60, "shared_memory": False, **settings}
    with TestClient(create_app(ApiSettings(data_dir=tmp_path, **options)), base_url=LOOPBACK) as client:
        yield client


def set_url(client: TestClient, url: str, **form) -> httpx.Response:
    return client.post("/set_url", data={"url": url, **form})


def described(client: TestClient, url: str) -> dict:
    """What GET /servers says of a registered server (/set_url answers BMW's string)."""
    (server,) = [s for s in client.get("/servers").json()["data"] if s["url"] == url.rstrip("/") + "/"]
    return server


def listed(client: TestClient) -> list[str]:
    return client.get("/list_urls").json()["data"]["urls"]


@pytest.fixture
def no_outgoing_requests(monkeypatch) -> list[str]:
    """Every request the API's own httpx clients send (TestClient's are sync and not counted)."""
    sent: list[str] = []

    async def record(self, request, **kwargs):
        sent.append(str(request.url))
        raise httpx.ConnectError("no network in this test", request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", record)
    return sent


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8081/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:8081/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ],
)
def test_addresses_no_inference_server_lives_at_are_refused_unasked(tmp_path, no_outgoing_requests, url):
    with api(tmp_path) as client:
        response = set_url(client, url)
        assert response.status_code == 400
        assert "is refused" in response.json()["error"] and "does not register" in response.json()["error"]
        assert listed(client) == []
    assert no_outgoing_requests == []


def test_credentials_in_urls_are_refused_unasked_and_never_shown(tmp_path):
    with Listener(OIP_READY) as server, api(tmp_path) as client:
        response = set_url(client, f"http://u:hunter2@127.0.0.1:{server.port}/")
        assert response.status_code == 400
        assert "credentials in URLs are not accepted; the registry never stores secrets" in response.json()["error"]
        assert "hunter2" not in response.text
        assert server.requests == [] and listed(client) == []


@pytest.mark.parametrize("alias", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1"])
def test_loopback_aliases_outside_the_allow_list_reach_nothing(tmp_path, alias):
    with Listener(OIP_READY) as server, api(tmp_path, registry_allow="10.0.0.0/8") as client:
        response = set_url(client, f"http://{alias}:{server.port}/")
        assert response.status_code == 400
        assert f"http://127.0.0.1:{server.port}/" in response.json()["error"]  # named as the address it is
        assert "ANONYMIZER_API_REGISTRY_ALLOW" in response.json()["error"]
        assert server.requests == [] and listed(client) == []


def test_loopback_aliases_are_registered_as_the_address_they_stand_for(tmp_path):
    with Listener(OIP_READY) as server, api(tmp_path) as client:
        for alias in ("2130706433", "0x7f.1"):
            assert set_url(client, f"http://{alias}:{server.port}/").status_code == 200
        assert listed(client) == [f"http://127.0.0.1:{server.port}/"]


def test_the_allow_list_refuses_what_it_does_not_name(tmp_path):
    with Listener(OIP_READY) as server, api(tmp_path, registry_allow="10.0.0.0/8") as client:
        response = set_url(client, server.url)
        assert response.status_code == 400 and "ANONYMIZER_API_REGISTRY_ALLOW" in response.json()["error"]
        assert server.requests == []


def test_localhost_is_the_loopback_address_in_the_allow_list_and_the_registry(tmp_path):
    with Listener(OIP_READY) as server, api(tmp_path, registry_allow="localhost") as client:
        assert set_url(client, f"http://localhost:{server.port}/").status_code == 200
        assert set(server.hosts) == {f"127.0.0.1:{server.port}"}
        assert listed(client) == [server.url]


def test_every_spelling_of_one_server_is_one_entry(tmp_path):
    """A second spelling stored as a second replica got its share of the calls, and `[::ffff:...]` was
    called without its brackets."""
    spellings = ["http://[::ffff:127.0.0.1]:{port}/", "http://localhost:{port}/", "LOCALHOST.:{port}", "{url}"]
    with Listener(OIP_READY) as server, api(tmp_path) as client:
        answers = [set_url(client, spelling.format(port=server.port, url=server.url)) for spelling in spellings]
        assert [a.json()["data"] for a in answers] == ["url added successfully"] + ["url already exist"] * 3
        assert listed(client) == [server.url]
        assert set(server.hosts) == {f"127.0.0.1:{server.port}"}


@pytest.mark.parametrize("suffix", ["?token=SECRET-1234", "#SECRET-1234", "v2/?a=1#SECRET-1234"])
def test_a_query_or_fragment_is_refused_unasked_and_never_shown_or_logged(tmp_path, caplog, suffix):
    caplog.set_level(logging.DEBUG)
    with Listener(OIP_READY) as server, api(tmp_path) as client:
        response = set_url(client, server.url + suffix)
        assert response.status_code == 400
        assert "a query (?...) or fragment (#...) in the url is not accepted" in response.json()["error"]
        assert server.requests == [] and listed(client) == []
        assert "SECRET" not in client.get("/servers").text
    assert "SECRET" not in response.text and "SECRET" not in caplog.text


def test_nothing_there_a_hang_up_and_silence_all_read_not_reachable(tmp_path):
    with Listener({"GET /v2/health/ready": hang_up}) as hanging, silent_port() as silent, api(tmp_path) as client:
        closed = f"http://127.0.0.1:{free_port()}/"
        for url in (closed, hanging.url, f"http://127.0.0.1:{silent}/", "http://no-such-host.invalid:8081/"):
            response = set_url(client, url)
            assert response.status_code == 400
            assert response.json()["error"] == f"{url} {NOT_REACHABLE}"


def test_only_a_server_that_answers_http_is_named_neither(tmp_path):
    with Listener() as server, api(tmp_path) as client:  # 404 to everything
        response = set_url(client, server.url)
        assert response.status_code == 400
        assert "is neither an Open Inference Protocol server" in response.json()["error"]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(tmp_path, status):
    with Listener(OIP_READY) as target:
        elsewhere = {
            "GET /v2/health/ready": redirect(target.url + "v2/health/ready", status),
            "GET /models": redirect("http://169.254.169.254/latest/meta-data/", status),
        }
        with Listener(elsewhere) as server, api(tmp_path) as client:
            response = set_url(client, server.url)
            assert response.status_code == 400 and f"answered {status}" in response.json()["error"]
            assert target.requests == [] and listed(client) == []


def test_a_redirect_during_inference_is_not_followed(tmp_path):
    """tritonclient follows redirects on its own; a registered server must not send images elsewhere."""
    with Listener() as target:
        answers = {**OIP_READY, **oip_model("centerface")}
        answers["POST /v2/models/centerface/infer"] = redirect(target.url, 307)
        with Listener(answers) as server, api(tmp_path) as client:
            assert set_url(client, server.url).status_code == 200
            config = json.dumps({"sensitive_info": [face_entry(url=server.url)]})
            files = {"image": ("a.png", encode(grace_hopper())), "configuration": ("c.json", config)}
            response = client.post("/anonymize", files=files)
            assert response.status_code == 502 and "307" in response.json()["error"]
            assert "POST /v2/models/centerface/infer" in server.requests
            assert target.requests == []


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "index",
    [{"models": ["centerface"]}, ["centerface", 7, None], [{"name": ["x"]}, {"name": {"a": 1}}], [{"state": "READY"}]],
)
def test_a_wrongly_shaped_model_index_is_a_400(tmp_path, index):
    """The README says so; it was a 200 with no models."""
    with (
        Listener({**OIP_READY, "POST /v2/repository/index": answer_json(200, index)}) as server,
        api(tmp_path) as client,
    ):
        response = set_url(client, server.url)
        assert response.status_code == 400
        assert "answered discovery with unexpected content" in response.json()["error"]
        assert "v2/repository/index" in response.json()["error"] and listed(client) == []


@pytest.mark.parametrize(
    "answers",
    [
        {"POST /v2/repository/index": answer_json(200, NESTED)},
        {"POST /v2/repository/index": answer_json(200, b"not json")},
        {**oip_model("m"), "GET /v2/models/m/config": answer_json(200, ["parameters"])},
        {**oip_model("m"), "GET /v2/models/m/config": answer_json(200, {"parameters": ["task"]})},
        {**oip_model("m"), "GET /v2/models/m/config": answer_json(200, {"parameters": {"task": [1], "labels": 5}})},
        {
            **oip_model("m"),
            "GET /v2/models/m/config": answer_json(
                200, {"parameters": {"task": "detection", "labels": {"string_value": NESTED.decode()}}}
            ),
        },
        {
            **oip_model("m"),
            "GET /v2/models/m/config": answer_json(
                200, {"parameters": {"task": "detection", "labels": [{"a": 1}], "presets": "[]"}}
            ),
        },
    ],
)
def test_discovery_answers_of_any_shape_are_a_4xx_or_no_models(tmp_path, answers):
    with Listener({**OIP_READY, **answers}) as server, api(tmp_path) as client:
        response = set_url(client, server.url)
        if response.status_code == 200:
            assert described(client, server.url)["models"] == {}
        else:
            assert response.status_code == 400 and "answered discovery with unexpected content" in response.text


@pytest.mark.parametrize(
    "answers",
    [
        {"GET /models": answer_json(200, {"data": ["m"]})},
        {"GET /models": answer_json(200, {"data": {"models": "m"}})},
        {"GET /models": answer_json(200, {"data": {"models": ["m", 3]}}), "GET /models/m/labels": answer_json(200, [])},
        {
            "GET /models": answer_json(200, {"data": {"models": ["m"]}}),
            "GET /models/m/labels": answer_json(200, {"data": {"face": 1}}),
            "GET /models/m/config": answer_json(200, {"data": ["type"]}),
        },
    ],
)
def test_bmw_discovery_answers_of_any_shape_are_a_4xx_or_no_models(tmp_path, answers):
    with Listener(answers) as server, api(tmp_path) as client:
        response = set_url(client, server.url)
        if response.status_code == 200:
            assert described(client, server.url)["models"] == {}
        else:
            assert response.status_code == 400, response.text


def test_models_and_labels_read_are_capped(tmp_path):
    names = [f"m{i}" for i in range(300)]
    answers = {**OIP_READY, "POST /v2/repository/index": answer_json(200, [{"name": n} for n in names])}
    for name in names:
        answers.update({k: v for k, v in oip_model(name).items() if "config" in k})
    labels = json.dumps([f"l{i}" for i in range(10_001)])
    answers["GET /v2/models/m0/config"] = answer_json(
        200, {"parameters": {"task": "detection", "labels": {"string_value": labels}}}
    )
    with Listener(answers) as server, api(tmp_path) as client:
        response = set_url(client, server.url)
        assert response.status_code == 200
        models = described(client, server.url)["models"]
        assert len(models) == 255 and "m0" not in models and "m255" in models and "m256" not in models
        assert sum(1 for r in server.requests if r.endswith("/config")) == 256


def test_an_answer_over_the_size_limit_is_refused(tmp_path):
    with Listener({**OIP_READY, "POST /v2/repository/index": endless()}) as server, api(tmp_path) as client:
        response = set_url(client, server.url)
        assert response.status_code == 400
        assert "more than 1048576 bytes (ANONYMIZER_API_MAX_DISCOVERY_BYTES)" in response.json()["error"]


def test_a_trickling_server_is_given_up_at_the_deadline(tmp_path):
    body = json.dumps([{"name": "m"}]).encode()
    slow = trickle(head(200, {"Content-Length": str(len(body))}) + body, every_s=0.5, start=40)
    with (
        Listener({**OIP_READY, "POST /v2/repository/index": slow}) as server,
        api(tmp_path, discovery_deadline_s=2) as client,
    ):
        started = time.monotonic()
        response = set_url(client, server.url)
        assert time.monotonic() - started < 10
        assert response.status_code == 400
        assert "did not complete discovery within 2 s (ANONYMIZER_API_DISCOVERY_DEADLINE_S)" in response.text


def test_the_registry_holds_at_most_max_servers(tmp_path):
    with (
        Listener(OIP_READY) as a,
        Listener(OIP_READY) as b,
        Listener(OIP_READY) as c,
        api(tmp_path, max_servers=2) as client,
    ):
        assert set_url(client, a.url).status_code == 200 and set_url(client, b.url).status_code == 200
        third = set_url(client, c.url)
        assert third.status_code == 409
        assert "2 servers" in third.json()["error"] and "ANONYMIZER_API_MAX_SERVERS" in third.json()["error"]
        assert c.requests == []  # not even discovered
        assert set_url(client, a.url).status_code == 200  # registering one already there again is fine
        assert listed(client) == [a.url, b.url]


@pytest.mark.parametrize(
    "models", ['{"m": {"task": ["detection"], "labels": ["face"]}}', '{"m": {"task": {}, "labels": ["face"]}}', "[1]"]
)
def test_given_models_of_any_shape_are_a_400(tmp_path, models):
    with Listener(OIP_READY) as server, api(tmp_path) as client:
        response = set_url(client, server.url, models=models)
        assert response.status_code == 400 and "models" in response.json()["error"]
        assert server.requests == []
