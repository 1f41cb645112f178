"""The web page's files as the API serves them, in-process: the page at /, its script and style
sheet under /static, its content security policy, and /docs beside it."""

import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch

import pytest
from fastapi.testclient import TestClient

from anonymization_api.main import create_app
from anonymization_api.routes.page import CONTENT_SECURITY_POLICY, STATIC
from anonymization_api.settings import ApiSettings
from tests.support.api import LOOPBACK
from tests.support.servers import PROJECT_ROOT


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[TestClient]:
    settings = ApiSettings(data_dir=tmp_path_factory.mktemp("api-data"), rediscover_interval_s=60)
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        yield client


def test_the_page_and_its_files(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/app.js"' in page.text and 'href="static/app.css"' in page.text
    script = api.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert api.get("/static/app.css").headers["content-type"].startswith("text/css")
    missing = api.get("/static/nothing.js")
    assert missing.status_code == 404 and missing.json()["success"] is False
    assert api.get("/docs").status_code == 200
    assert "/" not in api.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_the_page_has_its_policy_wherever_it_is_served(api):
    """/static/index.html is the same page as /, and had no policy."""
    for path in ("/", "/static/index.html", "/static/app.js"):
        assert api.get(path).headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path


def test_the_documents_load_nothing_from_elsewhere(api):
    """/docs loaded Swagger UI from a CDN, which the air-gapped sites this is for cannot reach."""
    page = api.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        answer = api.get(f"/{asset}")
        assert answer.status_code == 200 and answer.content, asset
    assert api.get("/openapi.json").status_code == 200
    assert api.get("/redoc").status_code == 404  # ReDoc has no packaged build: not offered


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, path.name


def test_the_wheel_carries_the_page():
    patterns = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in STATIC.iterdir():
        relative = path.relative_to(STATIC.parent).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns["anonymization_api"]), relative
