"""`anonymizer run` on a folder of mixed files, through the real API."""

import json
import subprocess
import sys

from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.servers import PROJECT_ROOT
from tests.support.videos import make_video, read_frames


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "anonymizer_tools.cli", "--log-level", "warning", "run", *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_folder_of_mixed_files(api_url, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "2026" / "march").mkdir(parents=True)
    (inbox / "portrait.png").write_bytes(encode(grace_hopper()))
    (inbox / "2026" / "march" / "again.jpg").write_bytes(encode(grace_hopper(), "JPEG", quality=95))
    source = make_video(inbox / "2026" / "clip.mov", frames=12)
    (inbox / "notes.txt").write_text("not media")
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    report = tmp_path / "report.json"

    finished = run_cli(str(inbox), "-o", str(out), "--api", api_url, "--report", str(report))

    assert finished.returncode == 1, finished.stdout + finished.stderr  # broken.jpg failed
    assert "3 anonymised, 1 failed, 1 skipped" in finished.stdout
    assert "broken.jpg" in finished.stdout and "could not be decoded" in finished.stdout
    assert "notes.txt" in finished.stderr  # the skip is reported
    for image in (out / "portrait.png", out / "2026" / "march" / "again.jpg"):
        assert region_change(grace_hopper(), decode(image.read_bytes()), GRACE_HOPPER_FACE) > 20
    frames, _, _ = read_frames(out / "2026" / "clip.mp4")
    assert len(frames) == len(source.frames)
    assert region_change(source.frames[5], frames[5], source.faces[5]) > 25
    assert not (out / "broken.jpg").exists() and not (out / "notes.txt").exists()
    assert not list(out.rglob("*.partial"))
    content = json.loads(report.read_text())
    portrait = content["files"][str(inbox / "portrait.png")]
    assert portrait["detections"][0]["class_name"] == "face" and portrait["detections"][0]["regions"]
    assert content["files"][str(inbox / "2026" / "clip.mov")]["detections"][0]["frames"] == 12
    assert list(content["failed"]) == [str(inbox / "broken.jpg")]


def test_shortcuts_without_a_config_file(api_url, tmp_path):
    image = tmp_path / "face.png"
    image.write_bytes(encode(grace_hopper()))
    finished = run_cli(
        str(image),
        "-o",
        str(tmp_path / "out"),
        "--api",
        api_url,
        "--classes",
        "face,license_plate",
        "--technique",
        "pixelating",
        "--degree",
        "1",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    result = decode((tmp_path / "out" / "face.png").read_bytes())
    assert region_change(grace_hopper(), result, GRACE_HOPPER_FACE) > 20


def test_detection_size_reaches_the_api(api_url, tmp_path):
    image = tmp_path / "face.png"
    image.write_bytes(encode(grace_hopper()))
    finished = run_cli(str(image), "-o", str(tmp_path / "out"), "--api", api_url, "--detection-size", "256x300")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    result = decode((tmp_path / "out" / "face.png").read_bytes())
    assert region_change(grace_hopper(), result, GRACE_HOPPER_FACE) > 20
    refused = run_cli(str(image), "-o", str(tmp_path / "again"), "--api", api_url, "--detection-size", "half")
    assert refused.returncode == 1 and "WIDTHxHEIGHT" in refused.stdout
    assert not (tmp_path / "again" / "face.png").exists()


def test_unreachable_api_exits_non_zero(tmp_path):
    image = tmp_path / "face.png"
    image.write_bytes(encode(grace_hopper()))
    finished = run_cli(str(image), "-o", str(tmp_path / "out"), "--api", "http://127.0.0.1:9")
    assert finished.returncode == 2 and "anonymizer up" in finished.stderr
