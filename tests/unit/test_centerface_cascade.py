"""The upscaled pass as a cascade: the 2x pass runs only on tiles where the 1x pass saw a candidate
small face, finds the same faces as the whole-image pass and sends the network fewer pixels."""

import os
from unittest import mock

import numpy as np
import pytest

from inference_common.models import default_models_dir
from inference_detection import centerface
from inference_detection.centerface import TILE, CenterFace, candidate_tiles
from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, coverage, face_at, grace_hopper

SMALL_FACES = [(60, 70), (900, 680), (920, 90)]  # top-left corners on a 1024x768 image


def test_tiles_are_those_holding_a_candidate():
    tiles = candidate_tiles(np.array([[10.0, 10.0], [700.0, 300.0]], np.float32), 1280, 960, 50)
    assert tiles == [(0, 0, TILE, TILE), (2 * TILE, TILE, 3 * TILE, 2 * TILE)]


def test_candidates_everywhere_or_a_small_image_upscale_the_whole_image():
    spread = np.array([[x, y] for x in range(0, 1280, TILE) for y in range(0, 960, TILE)], np.float32)
    assert candidate_tiles(spread, 1280, 960, 50) is None
    assert candidate_tiles(np.array([[10.0, 10.0]], np.float32), 300, 300, 50) is None


@pytest.fixture(scope="module")
def sparse_scene():
    """Three faces 18-26 px long on a plain, lightly noisy background, far apart."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 8, (768, 1024, 3)), 0, 255).astype(np.uint8)
    faces = [
        (grace_hopper(), GRACE_HOPPER_FACE, 20),
        (astronaut(), ASTRONAUT_FACE, 26),
        (grace_hopper(), GRACE_HOPPER_FACE, 18),
    ]
    truth = []
    for (x, y), (source, box, side) in zip(SMALL_FACES, faces, strict=True):
        face = face_at(source, box, side)
        image[y : y + face.shape[0], x : x + face.shape[1]] = face
        truth.append((x, y, x + face.shape[1], y + face.shape[0]))
    return image, truth


@pytest.fixture(scope="module")
def detector():
    model = CenterFace()
    model.load(default_models_dir())
    return model


@pytest.fixture(scope="module")
def float_detector():
    """The float network on every CPU, also for `balanced` (which runs INT8 otherwise)."""
    with mock.patch.dict(os.environ, {"ANONYMIZER_INT8": "off"}):
        model = CenterFace()
        model.load(default_models_dir())
    return model


def pixels_sent(model: CenterFace, image: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    sent = 0
    infer = model.engine.infer

    def counting(batch: np.ndarray) -> list[np.ndarray]:
        nonlocal sent
        sent += batch.shape[0] * batch.shape[1] * batch.shape[2]
        return infer(batch)

    model.engine.infer = counting
    try:
        return model.detect(image, model.parse_params({"upscaled_where": where})), sent
    finally:
        model.engine.infer = infer


def test_the_cascade_finds_every_small_face_with_fewer_network_pixels(detector, sparse_scene):
    image, truth = sparse_scene
    whole, whole_pixels = pixels_sent(detector, image, "everywhere")
    tiled, tiled_pixels = pixels_sent(detector, image, "candidates")
    for found in (whole, tiled):
        for face in truth:
            assert max(coverage(face, det[:4]) for det in found) > 0.7
    first_pass = image.shape[0] * image.shape[1]
    # three tiles with their margins, against the whole image at 2x
    assert tiled_pixels - first_pass < 0.6 * (whole_pixels - first_pass)


def test_a_face_on_a_tile_edge_is_found_once(detector, sparse_scene, monkeypatch):
    image, truth = sparse_scene
    monkeypatch.setattr(centerface, "TILE", 75)  # the first face (60..80 px) straddles a tile edge
    found, _ = pixels_sent(detector, image, "candidates")
    on_it = [det for det in found if coverage(truth[0], det[:4]) > 0.7]
    assert len(on_it) == 1


def test_a_window_of_a_large_frame_gets_the_passes_of_its_frame(detector):
    window = grace_hopper()[:256, :256]
    counted = []
    infer = detector.engine.infer
    detector.engine.infer = lambda batch: counted.append(batch.shape) or infer(batch)
    try:
        detector.detect(window, detector.parse_params({}))  # alone, small: 1x and 2x
        passes_alone = len(counted)
        counted.clear()
        detector.detect(window, detector.parse_params({"frame_pixels": 1920 * 1080}))  # 2x skipped, as on 1080p
    finally:
        detector.engine.infer = infer
    assert passes_alone == 2 and counted == [(1, 256, 256, 3)]


@pytest.mark.parametrize(
    "parameters",
    # the last: windows too large for the photo preset's later passes, so its first is raised to 0.96x
    [{}, {"frame_pixels": 1920 * 1080}, {"scales": "1"}, {"preset": "photo", "max_pixels": 60_000}],
)
def test_a_batch_finds_what_each_image_alone_finds(detector, parameters):
    # the first pass of a batch (a video's key-frame windows) runs as one network call
    image = grace_hopper()
    windows = np.stack([image[:256, :256], image[100:356, 120:376], image[200:456, 50:306]])
    params = detector.parse_params({"score_threshold": 0.3, **parameters})
    batched = detector.predict(windows, params)
    for i, window in enumerate(windows):
        alone = detector.detect(window, params)
        count = int(batched["num_dets"][i, 0])
        assert count == len(alone)
        np.testing.assert_allclose(batched["det_boxes"][i, :count], alone[:, :4], atol=0.5)
        np.testing.assert_allclose(batched["det_scores"][i, :count], alone[:, 4], atol=0.01)


def test_balanced_cascades_one_scale_down(float_detector, sparse_scene):
    """`balanced`: a pass at 0.75x, then 1x only on the tiles around its candidates of 24 px or less.
    The small faces are found, and the 1x pass sees a fraction of the image. (On the float network: in
    INT8, balanced's own, the 26 px face's box covers 0.56 of it, the cost of 8 bits on the smallest faces.)"""
    image, truth = sparse_scene
    sent = []
    detector = float_detector
    infer = detector.engine.infer
    detector.engine.infer = lambda batch: sent.append(batch.shape[1] * batch.shape[2]) or infer(batch)
    try:
        found = detector.detect(image, detector.parse_params({"preset": "balanced"}))
    finally:
        detector.engine.infer = infer
    for face in truth:
        assert max(coverage(face, det[:4]) for det in found) > 0.7
    whole = image.shape[0] * image.shape[1]
    assert sent[0] == pytest.approx(whole * 0.75**2, rel=0.05)  # the first pass, at 0.75x
    assert len(sent) > 1 and sum(sent[1:]) < 0.5 * whole  # then 1x on tiles only


def test_a_photo_too_large_for_its_cascade_gets_one_pass_as_large_as_allowed(detector):
    """The photo preset (0.75x, then 1x and 2x on tiles) on an image whose 1x pass would exceed
    `max_pixels`: the first pass is not left at 0.75x but runs at the largest scale that fits, as the
    defaults' one pass does, and the large face it finds is kept (the size limit of a pass above the
    lowest no longer applies, since it is the only pass)."""
    photo = detector.parse_params({"preset": "photo"})
    assert centerface.pass_scales(photo, 700_000) == [0.75, 1.0, 2.0]
    assert centerface.pass_scales(photo, 2_073_600) == [0.75, 1.0]  # 1080p: the 1x cascade still runs
    (scale,) = centerface.pass_scales(photo, 4_000_000)
    assert scale == pytest.approx((photo.max_pixels / 4_000_000) ** 0.5)  # 0.92x: 3.4 MP, not 2.25
    assert centerface.pass_scales(photo, 12_000_000) == [0.75]  # shrunk to fit either way
    assert centerface.pass_scales(detector.parse_params({}), 4_000_000) == [1.0]  # video frames: unchanged
    image = np.full((1700, 2400, 3), 120, np.uint8)  # 4.1 MP
    face = face_at(grace_hopper(), GRACE_HOPPER_FACE, 400)
    image[600 : 600 + face.shape[0], 1000 : 1000 + face.shape[1]] = face
    sent = []
    infer = detector.engine.infer
    detector.engine.infer = lambda batch: sent.append(batch.shape[1] * batch.shape[2]) or infer(batch)
    try:
        found = detector.detect(image, photo)
    finally:
        detector.engine.infer = infer
    assert len(sent) == 1 and sent[0] == pytest.approx(photo.max_pixels, rel=0.05)
    truth = (1000, 600, 1000 + face.shape[1], 600 + face.shape[0])
    assert max(coverage(truth, det[:4]) for det in found if det[4] >= 0.5) > 0.7
