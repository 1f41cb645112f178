"""Photos of any size run on a few input shapes: inputs are padded to shape buckets, the network is
prepared for each bucket once, memory stays flat over thousands of sizes, and a bucketed input
finds what the exact one finds."""

import os

import numpy as np
import pytest

from anonymizer_tools.processes import resident_mb
from inference_common.engine import (
    STATIC_COMPILER,
    Engine,
    PixelFormat,
    bucket_shape,
    bucket_side,
    cropped,
    spatial_crop,
)
from inference_common.engine_settings import EngineSettings
from inference_common.models import CENTERFACE, PPOCR_DET, default_models_dir, yolo_paths
from inference_common.ppocr import TextDetector
from inference_detection.centerface import CenterFace
from tests.support.images import GRACE_HOPPER_FACE, grace_hopper, iou, text_image, wheel_photo


def test_a_bucket_holds_the_side_with_little_to_spare():
    rng = np.random.default_rng(0)
    for side in rng.integers(1, 8192, 5000).tolist():
        bucket = bucket_side(side, 16)
        assert bucket >= side and bucket % 32 == 0
        assert bucket <= max(side + 32, side * 1.0625 + 64)  # at most one step of a sixteenth of an octave more
    # 16 sizes per octave from 512 up: thousands of sides fall into a few dozen buckets
    assert len({bucket_side(side, 16) for side in range(512, 4097)}) == 3 * 16 + 1
    assert [bucket_side(side, 16) for side in (720, 1080, 1920)] == [736, 1088, 1920]  # video frames: no padding
    assert [bucket_side(side, 0) for side in (1, 32, 33, 1000)] == [32, 32, 64, 1024]


def test_only_maps_with_the_input_grid_are_cropped():
    assert spatial_crop((1, 1, 176, 256), (704, 1024), (683, 1024)) == (171, 256)  # CenterFace, stride 4
    assert spatial_crop((1, 1, 704, 1024), (704, 1024), (683, 1000)) == (683, 1000)  # a text map, stride 1
    assert spatial_crop((1, 2475, 4), (352, 480), (330, 470)) is None  # YOLO's box list: kept whole
    outputs = cropped([np.ones((2, 3, 8, 10)), np.ones((2, 30, 4))], (32, 40), (30, 33))
    assert [o.shape for o in outputs] == [(2, 3, 8, 9), (2, 30, 4)]


@pytest.mark.parametrize(
    "path, pixels",
    [
        (lambda d: CENTERFACE.path_in(d), PixelFormat()),
        (lambda d: PPOCR_DET.path_in(d), PixelFormat(mean=127.5, scale=127.5, bgr=True)),
        (lambda d: yolo_paths(d)[2], PixelFormat(scale=255.0)),
    ],
    ids=["centerface", "ppocr", "yolo"],
)
def test_every_network_answers_in_the_image_own_size(path, pixels):
    engine = Engine(path(default_models_dir()), pixels, settings=EngineSettings(sizes_per_octave=16))
    exact = Engine(path(default_models_dir()), pixels, settings=EngineSettings(sizes_per_octave=0))
    images = np.random.default_rng(1).integers(0, 255, (2, 200, 296, 3), np.uint8)
    # 200x296 runs as 224x320, but the maps come back for 200x296, as the exact shape gives them
    for got, want in zip(engine.infer(images), exact.infer(images), strict=True):
        assert got.shape[:2] == want.shape[:2]
        if got.ndim == 4:
            assert got.shape == want.shape


@pytest.mark.parametrize("static_shapes", [0, 4], ids=["dynamic only", "with hot shapes compiled"])
def test_thousands_of_sizes_keep_the_shapes_and_the_memory_bounded(static_shapes):
    settings = EngineSettings(cached_shapes=64, static_shapes=static_shapes)
    engine = Engine(CENTERFACE.path_in(default_models_dir()), PixelFormat(), settings=settings)
    rng = np.random.default_rng(2)
    sizes = {(int(h), int(w)) for h, w in rng.integers(40, 257, (3000, 2))}
    assert len(sizes) > 2000
    buckets = {bucket_shape((1, h, w, 3), 16)[1:3] for h, w in sizes}
    assert len(buckets) == 49  # 7 x 7 bucket sides (64, 96, ... 256)
    pixels = rng.integers(0, 255, (256, 256, 3), np.uint8)
    for h, w in sorted(buckets):  # every bucket once: the network is prepared for each
        engine.infer(pixels[None, :h, :w])
    memory = resident_mb(os.getpid())
    for h, w in sorted(sizes):
        engine.infer(pixels[None, :h, :w])
    STATIC_COMPILER.submit(lambda: None).result()  # the background compilations are done
    assert engine.stats.new_shapes == len(buckets)  # thousands of sizes, no shape prepared again
    assert engine.stats.shapes == len(buckets)
    assert engine.stats.static_shapes == static_shapes  # the most run shapes got networks of their own, no more
    assert resident_mb(os.getpid()) - memory < 40 + 15 * static_shapes  # about 12 MB a network of its own


def test_the_prepared_shapes_are_bounded():
    engine = Engine(CENTERFACE.path_in(default_models_dir()), PixelFormat(), settings=EngineSettings(cached_shapes=4))
    pixels = np.zeros((1, 192, 192, 3), np.uint8)
    for side in (64, 96, 128, 160, 192, 64):
        engine.infer(pixels[:, :side, :side])
    assert engine.stats.shapes == 4  # the least recently used shape was dropped ...
    assert engine.stats.new_shapes == 6  # ... and prepared again when it came back


def test_a_shape_that_comes_back_gets_a_network_of_its_own():
    settings = EngineSettings(static_shapes=2, static_after=3)
    engine = Engine(yolo_paths(default_models_dir())[2], PixelFormat(scale=255.0), settings=settings)
    images = np.random.default_rng(3).integers(0, 255, (1, 224, 288, 3), np.uint8)
    dynamic = engine.infer(images)
    engine.infer(images)
    engine.infer(images)
    STATIC_COMPILER.submit(lambda: None).result()
    assert engine.stats.static_shapes == 1
    assert engine.compiled_alone == {(1, 224, 288, 3)}
    for own, shared in zip(engine.infer(images), dynamic, strict=True):  # the same network, the same answer
        np.testing.assert_allclose(own, shared, atol=0.05)
    # Two shapes run as often take the two places; a third, run no more often, waits for its turn ...
    for side in (160, 192, 160, 192, 160, 192):
        engine.infer(images[:, :side, :side])
    STATIC_COMPILER.submit(lambda: None).result()
    assert engine.stats.static_shapes == 2
    kept = engine.compiled_alone
    for _ in range(3):
        engine.infer(images[:, :96, :96])
    STATIC_COMPILER.submit(lambda: None).result()
    assert engine.compiled_alone == kept
    # ... and displaces the least run one once run more than twice as often.
    for _ in range(5):
        engine.infer(images[:, :96, :96])
    STATIC_COMPILER.submit(lambda: None).result()
    assert (1, 96, 96, 3) in engine.compiled_alone and len(engine.compiled_alone) == 2


@pytest.mark.parametrize("streams", [1, 2])
def test_a_batch_split_over_streams_answers_as_each_image_alone(streams):
    engine = Engine(CENTERFACE.path_in(default_models_dir()), PixelFormat(), settings=EngineSettings(streams=streams))
    images = np.random.default_rng(4).integers(0, 255, (3, 200, 296, 3), np.uint8)
    images[1] = grace_hopper()[:200, 40:336]
    batched = engine.infer(images)
    assert engine.stats.split_batches == (streams > 1)
    alone = [engine.infer(images[i : i + 1]) for i in range(3)]
    for index, output in enumerate(batched):
        np.testing.assert_allclose(output, np.concatenate([each[index] for each in alone]), atol=1e-4)
    assert batched[0][1].max() > 0.5  # the face's heat map: a real answer, not zeros


def test_a_network_with_box_lists_splits_its_batch_alike():
    # YOLOv4-tiny answers lists of boxes per image, not maps: split and joined, they stay each image's
    engine = Engine(yolo_paths(default_models_dir())[2], PixelFormat(scale=255.0), settings=EngineSettings(streams=2))
    images = np.stack([wheel_photo("bus.jpg")[:416, :416], np.zeros((416, 416, 3), np.uint8)])
    batched = engine.infer(images)
    assert engine.stats.split_batches == 1
    for index, output in enumerate(batched):
        alone = np.concatenate([engine.infer(images[i : i + 1])[index] for i in range(2)])
        np.testing.assert_allclose(output, alone, atol=1e-3)


def test_a_bucketed_photo_finds_what_the_exact_size_finds(monkeypatch):
    monkeypatch.setenv("ANONYMIZER_INT8", "off")
    image = grace_hopper()[:517, :389]  # 517x389 runs as 544x416 in its bucket
    found = {}
    for sizes in ("0", "16"):
        monkeypatch.setenv("ANONYMIZER_ENGINE_SIZES_PER_OCTAVE", sizes)
        model = CenterFace()
        model.load(default_models_dir())
        found[sizes] = model.detect(image, model.parse_params({"score_threshold": 0.5}))
    exact, bucketed = found["0"], found["16"]
    assert len(exact) == len(bucketed) == 1 and iou(exact[0, :4], GRACE_HOPPER_FACE) > 0.6
    assert iou(exact[0, :4], bucketed[0, :4]) > 0.95
    assert abs(exact[0, 4] - bucketed[0, 4]) < 0.03


def test_a_bucketed_text_map_matches_the_exact_one(monkeypatch):
    image, _ = text_image()
    maps = {}
    for sizes in ("0", "16"):
        monkeypatch.setenv("ANONYMIZER_ENGINE_SIZES_PER_OCTAVE", sizes)
        maps[sizes] = TextDetector(default_models_dir()).probability(image, 900)
    assert maps["0"].shape == maps["16"].shape
    text = maps["0"] > 0.3
    assert text.mean() > 0.01
    assert ((maps["16"] > 0.3) == text).mean() > 0.98
