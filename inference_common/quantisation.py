"""CenterFace in INT8: post-training quantisation with NNCF, made on the user's machine when the
models are fetched (`anonymizer models fetch`), never committed and never downloaded.

On CPUs where OpenVINO infers in float32 (AVX2 and AVX-512 without bf16) the INT8 network is
1.3-1.8x as fast; on bf16 CPUs 1.05-1.25x (docs/benchmarks.md). Which one a server runs
is `int8_model()`: $ANONYMIZER_INT8 = `auto` (INT8 where the CPU infers in float32), `on`, `off`.

Calibration needs images of faces, small and large, and of scenes without faces: they are
generated here, seeded, from pictures that ship inside scikit-image (its LFW subset of 25x25
faces, the astronaut, photos of objects, a cat, the sky and textures), so every machine makes the same model.
"""

import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np

from inference_common.engine import cpu_description, inference_precision
from inference_common.errors import ModelFetchError
from inference_common.models import CENTERFACE, sha256_of

logger = logging.getLogger(__name__)

INT8_ENV = "ANONYMIZER_INT8"
CALIBRATION_VERSION = 1  # bump when calibration_images changes, so existing INT8 models are made again
CALIBRATION_SIZE = (1024, 768)
CALIBRATION_IMAGES = 48
ASTRONAUT_FACE = (175, 55, 275, 180)  # x1, y1, x2, y2 in skimage's astronaut


def int8_paths(models_dir: Path) -> tuple[Path, Path]:
    """The INT8 network (OpenVINO IR, .xml beside its .bin) and the record of what it was made from."""
    folder = CENTERFACE.path_in(models_dir).parent
    return folder / "centerface_int8.xml", folder / "centerface_int8.json"


def _provenance(models_dir: Path) -> dict[str, object]:
    return {
        "source_sha256": sha256_of(CENTERFACE.path_in(models_dir)),
        "openvino": version("openvino"),
        "nncf": version("nncf"),
        "calibration": CALIBRATION_VERSION,
    }


def int8_ready(models_dir: Path) -> bool:
    """Whether the INT8 network is there, whole, and made from this CenterFace by these versions."""
    network, record = int8_paths(models_dir)
    if not (network.is_file() and network.with_suffix(".bin").is_file() and record.is_file()):
        return False
    try:
        return json.loads(record.read_text()) == _provenance(models_dir)
    except (ValueError, OSError):
        return False


def calibration_images(count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB uint8 images of CALIBRATION_SIZE: a packaged photo as background, and on most of
    them faces of 10-300 px (LFW faces and the astronaut's), some in rows as in a crowd."""
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
    width, height = CALIBRATION_SIZE
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


def quantise_centerface(models_dir: Path) -> Path:
    """Make the INT8 CenterFace in `models_dir` unless an up-to-date one is there; returns its path.
    Written to a temporary folder and moved in, the record last, so a crash leaves no model in use."""
    network, record = int8_paths(models_dir)
    if int8_ready(models_dir):
        return network
    # NNCF sends usage telemetry to Google Analytics unless NNCF_CI is set (its only switch short of
    # writing an opt-out file into the user's home); an anonymisation service sends nothing.
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ModelFetchError(f"quantising CenterFace needs {exc.name}: install the `inference` extra") from exc
    logger.info("quantising centerface to INT8 (nncf %s, %d calibration images)", version("nncf"), CALIBRATION_IMAGES)
    model = ov.Core().read_model(CENTERFACE.path_in(models_dir))
    width, height = CALIBRATION_SIZE
    model.reshape({model.inputs[0].get_any_name(): [1, 3, height, width]})
    samples = [image.transpose(2, 0, 1)[None].astype(np.float32) for image in calibration_images()]
    quantised = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    record.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=network.parent) as scratch:
        ov.save_model(quantised, Path(scratch) / network.name, compress_to_fp16=False)
        shutil.move(Path(scratch) / network.with_suffix(".bin").name, network.with_suffix(".bin"))
        shutil.move(Path(scratch) / network.name, network)
    record.write_text(json.dumps(_provenance(models_dir)))
    return network


def int8_model(models_dir: Path) -> Path | None:
    """The INT8 CenterFace to run, or None for the float one: by $ANONYMIZER_INT8 and, for `auto`,
    the precision OpenVINO infers in here (only in f32 is INT8's gain worth its small recall cost)."""
    choice = os.environ.get(INT8_ENV, "auto").lower()
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"{INT8_ENV}={choice!r} is not one of auto, on, off")
    if choice == "off" or (choice == "auto" and inference_precision() != "f32"):
        return None
    if not int8_ready(models_dir):
        if choice == "on":
            raise ModelFetchError(
                f"{INT8_ENV}=on, but {models_dir} has no INT8 CenterFace: run `anonymizer models fetch`"
            )
        logger.warning("no INT8 CenterFace in %s (run `anonymizer models fetch`): running it in float", models_dir)
        return None
    return int8_paths(models_dir)[0]


def describe_machine(models_dir: Path) -> str:
    """`cpu_description()` and which CenterFace network the servers here run, for benchmarks' first line."""
    network = "INT8" if int8_model(models_dir) else f"float, in {inference_precision()}"
    return f"{cpu_description()}; CenterFace: {network} ({INT8_ENV}={os.environ.get(INT8_ENV, 'auto')})"
