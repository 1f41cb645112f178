"""API keys and roles, the loopback rule without keys, and requests from other sites' pages."""

import hashlib

import pytest
from fastapi.testclient import TestClient

from anonymization_api.auth import InvalidKeys, KeyRing, Role, check_exposure
from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from tests.support.api import LOOPBACK
from tests.support.images import encode, grace_hopper

ADMIN_KEY = "admin-key-0123456789abcdef"
USER_KEY = "user-key-0123456789abcdef"
OTHER_USER = "other-user-0123456789abcdef"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    settings = ApiSettings(
        data_dir=tmp_path_factory.mktemp("api-data"),
        admin_keys=ADMIN_KEY,
        user_keys=f"{USER_KEY}, sha256:{hashlib.sha256(OTHER_USER.encode()).hexdigest()}",
        cors_origins="https://intranet.example",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def anonymize(api, **headers):
    files = {"image": ("a.png", encode(grace_hopper())), "configuration": ("c.json", '{"sensitive_info": []}')}
    return api.post("/anonymize", files=files, headers=headers)


def test_without_a_key_the_answer_is_401_naming_both_ways_to_send_one(api):
    answer = api.post("/remove_all_urls")
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer KEY" in answer.json()["error"] and "X-API-Key" in answer.json()["error"]
    assert api.get("/list_urls", headers=bearer("not-a-key-at-all-123")).status_code == 401
    assert anonymize(api).status_code == 401


def test_users_anonymise_and_read_but_only_admins_change_the_registry(api):
    for key in (USER_KEY, OTHER_USER):  # the second is configured by its sha256 only
        assert anonymize(api, **bearer(key)).status_code == 422  # past authentication: the configuration is empty
        assert api.get("/list_urls", headers={"X-API-Key": key}).status_code == 200
        refused = api.post("/set_url", data={"url": "http://127.0.0.1:1/"}, headers=bearer(key))
        assert refused.status_code == 403 and "admin key" in refused.json()["error"]
    assert api.post("/remove_all_urls", headers=bearer(ADMIN_KEY)).json()["data"] == "all urls removed successfully"
    assert anonymize(api, **bearer(ADMIN_KEY)).status_code == 422


def test_health_and_the_documents_stay_open(api):
    assert api.get("/health").status_code == 200
    schema = api.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert schema["paths"]["/set_url"]["post"]["security"]


def test_pages_of_other_sites_are_refused_and_allowed_origins_get_cors(api):
    evil = api.get("/list_urls", headers={**bearer(USER_KEY), "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "evil.example" in evil.json()["error"]
    posted = api.post("/set_url", data={"url": "http://x/"}, headers={"Origin": "http://evil.example"})
    assert posted.status_code == 403
    same = api.get("/list_urls", headers={**bearer(USER_KEY), "Origin": "http://testserver"})
    assert same.status_code == 200
    allowed = api.get("/list_urls", headers={**bearer(USER_KEY), "Origin": "https://intranet.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://intranet.example"


def test_without_keys_only_loopback_unless_asked(tmp_path):
    none = KeyRing.from_settings("", "", None)
    check_exposure("127.0.0.1", none, False)
    check_exposure("::1", none, False)
    with pytest.raises(InvalidKeys, match="ANONYMIZER_API_ADMIN_KEYS"):
        check_exposure("0.0.0.0", none, False)
    check_exposure("0.0.0.0", none, True)
    check_exposure("0.0.0.0", KeyRing.from_settings(ADMIN_KEY, "", None), False)
    with pytest.raises(InvalidKeys):
        create_app(ApiSettings(data_dir=tmp_path, host="0.0.0.0"))


@pytest.mark.parametrize(
    "host", ["127.0.0.1:4343", "localhost", "LOCALHOST:80", "[::1]:4343", "127.8.9.10", "a.localhost"]
)
def test_without_keys_requests_addressed_to_loopback_are_answered(tmp_path, host):
    with TestClient(create_app(ApiSettings(data_dir=tmp_path)), base_url=f"http://{host}") as client:
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("host", ["rebind.example:4343", "rebind.example", "192.168.1.5:4343", "[::ffff:7f00:1]x", ""])
def test_without_keys_a_request_addressed_to_another_name_is_refused(tmp_path, host):
    """A page of rebind.example, its name re-pointed to 127.0.0.1, sends its own Host and Origin."""
    with TestClient(create_app(ApiSettings(data_dir=tmp_path))) as client:
        for method, path in (("POST", "/set_url"), ("GET", "/list_urls"), ("GET", "/"), ("GET", "/health")):
            answer = client.request(method, path, headers={"Host": host, "Origin": f"http://{host}"})
            assert answer.status_code == 421, (method, path)
            assert "127.0.0.1" in answer.json()["error"] and "ANONYMIZER_API_ADMIN_KEYS" in answer.json()["error"]


def test_with_keys_or_behind_a_proxy_any_name_reaches_the_service(tmp_path, api):
    assert api.get("/health", headers={"Host": "anonymizer.intranet.example"}).status_code == 200
    settings = ApiSettings(data_dir=tmp_path, host="0.0.0.0", allow_anonymous_remote=True)
    with TestClient(create_app(settings), base_url="http://anonymizer.intranet.example") as client:
        assert client.get("/health").status_code == 200


def test_keys_file_and_bad_keys(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# the team\nadmin {ADMIN_KEY}\nuser sha256:{'a' * 64}  # a hashed one\n")
    ring = KeyRing.from_settings("", "", keys)
    assert ring.caller(ADMIN_KEY).role is Role.ADMIN and ring.caller(ADMIN_KEY).key_id
    assert ADMIN_KEY not in repr(ring.caller(ADMIN_KEY))  # the key id is a hash prefix, never the key
    keys.write_text("owner some-long-key-123456\n")
    with pytest.raises(InvalidKeys, match="line 1"):
        KeyRing.from_settings("", "", keys)
    with pytest.raises(InvalidKeys, match="16 characters"):
        KeyRing.from_settings("short", "", None)
    with pytest.raises(InvalidKeys, match="64 hexadecimal"):
        KeyRing.from_settings("sha256:abc", "", None)


def test_health_tells_anyone_how_many_servers_answer_and_only_admins_where_they_are(tmp_path):
    """The registry's addresses say where the original images go: /health and /metrics keep them for
    admins, while a health check without a key still gets its answer."""
    registry = tmp_path / "jsonFiles" / "url_configuration.json"
    registry.parent.mkdir()
    registry.write_text('{"urls": ["http://10.9.9.9:8081/"]}')
    settings = ApiSettings(data_dir=tmp_path, admin_keys=ADMIN_KEY, user_keys=USER_KEY, rediscover_interval_s=3600)
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        for headers in ({}, bearer(USER_KEY), bearer("not-a-key-at-all-123")):
            answer = client.get("/health", headers=headers)
            assert answer.status_code == 200 and "10.9.9.9" not in answer.text
            assert answer.json()["data"] | {"status": "ok"} == {
                "status": "ok",
                "available": 0,
                "unavailable": 1,
                "servers": {},
            }
        for headers in (bearer(ADMIN_KEY), {"X-API-Key": ADMIN_KEY}):
            admin = client.get("/health", headers=headers).json()["data"]
            assert admin["servers"] == {"http://10.9.9.9:8081/": False}
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(USER_KEY)).status_code == 403
        scraped = client.get("/metrics", headers=bearer(ADMIN_KEY))
        assert scraped.status_code == 200 and "anonymizer_http_requests_total" in scraped.text
