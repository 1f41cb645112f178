"""The web page at / in headless Chromium, against the real API and inference servers: upload an
image, review and correct it (keep a face, hide a missed region), download it alone and in a ZIP,
a video job to its end and playing, and the API's errors shown beside their cause.

Chromium is the system's (the Debian package `chromium`, which scripts/test-system-packages installs), driven
by Playwright; Playwright's own browser downloads are never used. Without Chromium these tests
fail, saying how to install it. `ANONYMIZER_UPDATE_SCREENSHOTS=1` also writes the README's
screenshots to docs/."""

import base64
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.images import ASTRONAUT_FACE, astronaut, decode, encode, region_change
from tests.support.servers import PROJECT_ROOT
from tests.support.videos import make_video

CHROMIUM = Path(os.environ.get("ANONYMIZER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "docs"
MAX_SCREENSHOT_BYTES = 300_000
SHUTTLE = (380, 80, 460, 240)  # the model space shuttle behind the astronaut: textured, far from her face
FLAG = (10, 30, 70, 200)  # the flag on the left
RENDER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium was not found at {CHROMIUM}; the browser tests need it. Install it with "
            "'apt-get install chromium chromium-driver' (scripts/test-system-packages does so as root), or point "
            "ANONYMIZER_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, api_url) -> Iterator:
    context = browser.new_context(viewport={"width": 1200, "height": 860}, accept_downloads=True)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{api_url}/")
    page.wait_for_selector("#class-list input")
    yield page
    context.close()
    assert not script_errors, f"the page's script failed: {script_errors}"


def after_image(page) -> np.ndarray:
    """The anonymised image the page shows, decoded from its data URL."""
    src = page.get_attribute("#after", "src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return decode(base64.b64decode(src.split(",", 1)[1]))


def rendered(page, action: Callable[[], object]) -> np.ndarray:
    """Do `action`, wait for the review's next finished render, and return what it shows."""
    count = int(page.get_attribute("#review", "data-renders"))
    action()
    page.wait_for_function(
        "n => { const r = document.querySelector('#review'); return Number(r.dataset.renders) > n"
        " && r.dataset.state === 'ready'; }",
        arg=count,
        timeout=RENDER_TIMEOUT_MS,
    )
    return after_image(page)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def inside(mask: np.ndarray, box, margin: int) -> bool:
    """Whether `mask` has True pixels, all within `box` grown by `margin`."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return False
    x1, y1, x2, y2 = box
    return x1 - margin <= xs.min() and xs.max() < x2 + margin and y1 - margin <= ys.min() and ys.max() < y2 + margin


def page_point(page, x: float, y: float) -> tuple[float, float]:
    """The page position of image pixel (x, y) on the review's overlay."""
    rect = page.locator("#overlay").bounding_box()
    width, height = astronaut().shape[1], astronaut().shape[0]
    return rect["x"] + x * rect["width"] / width, rect["y"] + y * rect["height"] / height


def screenshot(page, name: str) -> None:
    """A screenshot for the README, reduced to a palette so it stays small; written to docs/ only
    when asked, so that a test run leaves the working tree as it was."""
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    small = shot.quantize(colors=128, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < MAX_SCREENSHOT_BYTES
    if os.environ.get("ANONYMIZER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        (SCREENSHOTS / name).write_bytes(buffer.getvalue())


def test_page_is_served_with_its_files(page, api_url):
    assert page.title() == "Anonymizer"
    labels = page.locator("#class-list label").all_inner_texts()
    assert any("face (detection, centerface)" in label for label in labels)
    face = next(i for i, label in enumerate(labels) if "face (detection, centerface)" in label)
    boxes = page.locator("#class-list input")
    checked = [i for i in range(boxes.count()) if boxes.nth(i).is_checked()]
    assert checked == [face]  # faces are chosen to begin with
    assert "blurring" in page.locator("#technique option").all_inner_texts()
    assert page.locator("#servers .badge.ok").count() == 2  # both inference servers, available


def test_review_keep_hide_and_download(page, tmp_path):
    source = astronaut()
    image_file = tmp_path / "astronaut.png"
    image_file.write_bytes(encode(source))
    first = rendered(page, lambda: page.set_input_files("#file-input", str(image_file)))
    assert first.shape == source.shape
    assert region_change(source, first, ASTRONAUT_FACE) > 20
    assert inside(changed(source, first), ASTRONAUT_FACE, 70)  # the face changed, nothing far from it

    faces = page.locator("#overlay g.box.hidden")
    assert faces.count() == 1 and "face" in faces.first.get_attribute("aria-label")
    kept = rendered(page, lambda: faces.first.click())  # keep her face visible
    assert np.array_equal(kept, source)  # the face is back, and nothing else was hidden
    assert page.locator("#overlay g.box.kept").count() == 1
    assert not page.locator("#detections input[type=checkbox]").first.is_checked()

    def drag() -> None:
        page.mouse.move(*page_point(page, SHUTTLE[0], SHUTTLE[1]))
        page.mouse.down()
        page.mouse.move(*page_point(page, SHUTTLE[2], SHUTTLE[3]), steps=5)
        page.mouse.up()

    hidden = rendered(page, drag)  # hide what the detector missed
    assert region_change(source, hidden, SHUTTLE) > 10
    assert inside(changed(source, hidden), SHUTTLE, 2)  # the face stays as it was
    assert page.locator("#overlay g.box.user").count() == 1

    # the keyboard path: Enter on the kept box hides the face again
    page.locator("#overlay g.box.kept").focus()
    again = rendered(page, lambda: page.keyboard.press("Enter"))
    assert page.evaluate("document.activeElement.dataset.focus").startswith("box:")  # the focus stays on it
    assert region_change(source, again, ASTRONAUT_FACE) > 20 and region_change(source, again, SHUTTLE) > 10
    assert page.locator("#detections input[type=checkbox]").first.is_checked()
    page.locator("#split").fill("30")  # the split between before and after follows its slider
    assert "30%" in page.locator("#after").evaluate("image => image.style.clipPath")
    page.locator("#review").evaluate("node => node.scrollIntoView()")
    screenshot(page, "page-review.png")

    # the degree slider: the preview follows it; at 0 nothing changes
    page.locator("#degree").focus()
    assert np.array_equal(rendered(page, lambda: page.keyboard.press("Home")), source)
    final = rendered(page, lambda: page.keyboard.press("End"))
    assert np.array_equal(final, again)

    with page.expect_download() as one:
        page.click("#download-one")
    assert one.value.suggested_filename == "astronaut_anonymized.png"
    assert np.array_equal(decode(Path(one.value.path()).read_bytes()), final)

    with page.expect_download() as everything:
        page.click("#download-all")
    with zipfile.ZipFile(everything.value.path()) as archive:
        assert archive.testzip() is None  # every CRC right
        assert archive.namelist() == ["astronaut_anonymized.png", "astronaut_anonymized.json"]
        assert np.array_equal(decode(archive.read("astronaut_anonymized.png")), final)
        audit = json.loads(archive.read("astronaut_anonymized.json"))
    assert audit["image"] == "astronaut.png" and audit["width"] == 512
    (entry,) = audit["configuration"]["sensitive_info"]
    assert entry["class_name"] == "face" and entry["hide"] == [list(SHUTTLE)]
    assert [region.get("source") for region in audit["detections"][0]["regions"]] == [None, "hide"]

    # the keyboard path for drawing: a box given by its edges
    for name, value in zip(("x1", "y1", "x2", "y2"), FLAG, strict=True):
        page.fill(f"#hide-form input[name={name}]", str(value))
    typed = rendered(page, lambda: page.press("#hide-form input[name=y2]", "Enter"))
    assert region_change(source, typed, FLAG) > 10 and page.locator("#overlay g.box.user").count() == 2

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#review").evaluate("node => node.scrollIntoView()")
    screenshot(page, "page-phone.png")


def test_video_job_reaches_the_end_and_plays(page, tmp_path):
    video = make_video(tmp_path / "walk.mp4", frames=30, fps=15)
    page.set_input_files("#file-input", str(video.path))
    page.wait_for_function(
        "() => document.querySelector('#job-progress').value === 100"
        " && !document.querySelector('#result-video').hidden",
        timeout=180_000,
    )
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 100
    assert page.inner_text("#job-text") == "done: 30 frames"
    player = page.locator("#result-video")
    player.evaluate("video => { video.muted = true; return video.play(); }")
    page.wait_for_function("() => document.querySelector('#result-video').currentTime > 0.3", timeout=30_000)
    assert page.get_attribute("#download-video", "download") == "walk_anonymized.mp4"
    player.evaluate("video => { video.pause(); video.currentTime = 1; }")
    page.wait_for_function("() => document.querySelector('#result-video').readyState >= 2")
    page.locator("#video").evaluate("node => node.scrollIntoView()")
    screenshot(page, "page-video.png")


def test_errors_are_shown_beside_their_cause(page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    page.set_input_files("#file-input", str(notes))
    page.wait_for_selector("#review-error:not([hidden])", timeout=RENDER_TIMEOUT_MS)
    assert "could not be decoded" in page.inner_text("#review-error")
    assert "could not be decoded" in page.inner_text("#image-list")

    # nothing chosen to hide: the API refuses the configuration, and the page says so by the classes
    for box in page.locator("#class-list input:checked").all():
        box.uncheck()
    page.wait_for_selector("#classes-error:not([hidden])", timeout=RENDER_TIMEOUT_MS)
    assert "sensitive_info lists nothing to hide" in page.inner_text("#classes-error")
