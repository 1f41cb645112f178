"""The registry file: BMW's shape read as it is, ours written whole, malformed entries survived."""

import asyncio
import json
import stat

from anonymization_api.registry import ModelInfo, Protocol, Registry, ServerInfo
from anonymizer_shared.wire import Task


def registry_at(path) -> Registry:
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    return registry


def test_a_missing_file_is_an_empty_registry_written_readable(tmp_path):
    path = tmp_path / "jsonFiles" / "url_configuration.json"
    assert registry_at(path).servers() == []
    assert json.loads(path.read_text())["urls"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a BMW container's user reads it


def test_bmw_file_as_it_is(tmp_path):
    path = tmp_path / "url_configuration.json"
    path.write_text(json.dumps({"urls": ["127.0.0.1:8081", "http://127.0.0.1:8090/"]}))
    servers = registry_at(path).servers()
    assert [server.url for server in servers] == ["http://127.0.0.1:8081/", "http://127.0.0.1:8090/"]
    assert all(not server.available and server.models == {} for server in servers)


def test_what_discovery_found_survives_a_restart(tmp_path):
    path = tmp_path / "url_configuration.json"
    registry = registry_at(path)
    model = ModelInfo("centerface", Task.DETECTION, ("face",), {"score_threshold": 0.1}, {"strict": {"flip": "all"}})
    given = ModelInfo("ovms_face", Task.DETECTION, ("face",))
    registry._servers["http://127.0.0.1:8081/"] = ServerInfo(
        "http://127.0.0.1:8081/", Protocol.OIP, {"centerface": model}, available=True, given={"ovms_face": given}
    )
    registry._write()
    (server,) = registry_at(path).servers()
    assert server.protocol is Protocol.OIP and server.models == {"centerface": model}
    assert server.given == {"ovms_face": given}
    assert not server.available and not server.discovered  # known, but discovered again before it is used


def test_a_server_record_without_task_is_rediscovered_not_a_crash(tmp_path):
    path = tmp_path / "url_configuration.json"
    servers = {"http://127.0.0.1:1/": {"protocol": "oip", "models": {"m": {"labels": ["face"]}}}}
    path.write_text(json.dumps({"urls": ["http://127.0.0.1:1/"], "servers": servers}))
    (server,) = registry_at(path).servers()
    assert server.models == {}


def test_a_file_of_another_shape_is_reported_kept_and_the_registry_starts_empty(tmp_path, caplog):
    path = tmp_path / "url_configuration.json"
    path.write_text('{"urls": "x"}')
    assert registry_at(path).servers() == []
    assert "urls" in caplog.text and "starts empty" in caplog.text
    assert (tmp_path / "url_configuration.json.invalid").read_text() == '{"urls": "x"}'


def test_a_default_port_is_kept_as_written(tmp_path):
    path = tmp_path / "url_configuration.json"
    path.write_text(json.dumps({"urls": ["http://inference:80/", "https://triton:443", "http://127.0.0.1:8081"]}))
    urls = [server.url for server in registry_at(path).servers()]
    assert urls == ["http://inference:80/", "https://triton:443/", "http://127.0.0.1:8081/"]


def test_writes_leave_no_temporary_files(tmp_path):
    path = tmp_path / "url_configuration.json"
    registry = registry_at(path)
    for _ in range(3):
        registry._write()
    assert [p.name for p in tmp_path.iterdir()] == ["url_configuration.json"]


def test_a_file_with_more_servers_than_the_limit_keeps_the_first(tmp_path, caplog):
    path = tmp_path / "url_configuration.json"
    urls = [f"http://127.0.0.1:{port}/" for port in range(8001, 8006)]
    path.write_text(json.dumps({"urls": urls}))
    registry = Registry(path, discovery_timeout_s=1, max_servers=2)
    registry.load()
    assert [server.url for server in registry.servers()] == urls[:2]
    assert "ANONYMIZER_API_MAX_SERVERS" in caplog.text and urls[4] in caplog.text


def test_entries_with_credentials_or_aliases(tmp_path, caplog):
    """Credentials are dropped (and not logged); an alias is the address it stands for."""
    path = tmp_path / "url_configuration.json"
    path.write_text(json.dumps({"urls": ["http://u:hunter2@127.0.0.1:8081/", "http://2130706433:8090"]}))
    assert [server.url for server in registry_at(path).servers()] == ["http://127.0.0.1:8090/"]
    assert "credentials in URLs are not accepted" in caplog.text and "hunter2" not in caplog.text


def test_a_server_whose_labels_change_is_not_believed_until_registered_again(tmp_path, monkeypatch):
    from anonymization_api.registry import store

    path = tmp_path / "url_configuration.json"
    registry = registry_at(path)
    url = "http://127.0.0.1:8081/"
    registered = ModelInfo("centerface", Task.DETECTION, ("face",))
    registry._servers[url] = ServerInfo(url, Protocol.OIP, {"centerface": registered}, available=True)
    now = {"labels": ("face",)}

    async def discover(found_url, given, limits, policy):
        model = ModelInfo("centerface", Task.DETECTION, now["labels"])
        return ServerInfo(found_url, Protocol.OIP, {"centerface": model}, available=True, discovered=True)

    monkeypatch.setattr(store, "discover", discover)
    now["labels"] = ("background",)  # it says its face model finds something else now
    asyncio.run(registry.refresh())
    (server,) = registry.servers()
    assert not server.available and "changed since it was registered" in server.error
    assert not server.discovered  # not even tried last, in case it is back: it is not what was registered
    assert server.models["centerface"].labels == ("face",)  # what was registered is kept
    asyncio.run(registry.add(url))  # an administrator accepts the change
    (server,) = registry.servers()
    assert server.available and server.models["centerface"].labels == ("background",)
