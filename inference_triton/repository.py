"""A Triton model repository for every bundled model (`anonymizer triton-repo OUT_DIR` writes one).

The repository holds, per model, `config.pbtxt` (docs/architecture.md, "The model contract": `IMAGE`, the
task's outputs, `parameters` task/labels/defaults/presets, dynamic batching, an instance group) and
`1/model.py`, a generated adapter that only puts our code on `sys.path` and re-exports
`inference_triton.model.TritonPythonModel`: no pipeline logic is copied into the repository.

GPU with a CPU fallback: `--device auto` (the default) writes `kind: KIND_AUTO`, which Triton resolves
when it loads the model: instances on every visible GPU if there is one, on the CPU otherwise. The
same repository therefore serves on a GPU machine and on a CPU-only CI runner. `--device gpu`
writes `KIND_GPU` (Triton then refuses to load the model without a GPU, which is what someone asking
for a GPU wants to hear); `--device cpu` writes `KIND_CPU`.
"""

import logging
import site
from pathlib import Path

from anonymizer_shared.files import PROJECT_ROOT
from inference_common.serving import ServedModel
from inference_detection.server import detection_models
from inference_segmentation.server import segmentation_models

logger = logging.getLogger(__name__)

KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ADAPTER_MODULE = "inference_triton.model"

# --- the model repository ------------------------------------------------------------------------


def served_models() -> list[ServedModel]:
    """Every bundled model, detection and segmentation."""
    return detection_models() + segmentation_models()


def _quote(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 is allowed as it is)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(dim) for dim in dims) + " ]"


def config_pbtxt(model: ServedModel, max_batch_size: int, device: str, instances: int, models_dir: Path) -> str:
    """The model's `config.pbtxt`, generated from its declaration (`ServedModel.triton_config`)."""
    declared = model.triton_config(max_batch_size)
    lines = [
        f"name: {_quote(model.name)}",
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
    ]
    for kind in ("input", "output"):
        for tensor in declared[kind]:
            lines.append(
                f"{kind} {{ name: {_quote(tensor['name'])} data_type: {tensor['data_type']} "
                f"dims: {_dims(tensor['dims'])} }}"
            )
    # Requests of any image size are queued together; the Python back end hands them over one by one
    # (it never concatenates), so each request keeps its own batch and image size.
    lines.append("dynamic_batching { }")
    lines.append(f"instance_group [ {{ kind: {KINDS[device]} count: {instances} }} ]")
    parameters = {key: value["string_value"] for key, value in declared["parameters"].items()}
    parameters["models_dir"] = str(models_dir)
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def default_python_path() -> list[str]:
    """The site-packages of the running Python and the project folder: where our code and its
    dependencies are importable from."""
    return [*site.getsitepackages(), str(PROJECT_ROOT)]


def adapter_source(model_name: str, python_path: list[str]) -> str:
    """`1/model.py`: puts our environment first on sys.path and re-exports the model class."""
    return f'''"""Triton Python back end for `{model_name}`, written by `anonymizer triton-repo`.

The model lives in {ADAPTER_MODULE}; this file only makes it importable. Triton's Python stub runs an
isolated interpreter that ignores PYTHONPATH, so $PYTHONPATH and the environment this repository was
generated from are put first on sys.path here (site.addsitedir also reads their .pth files, which is
how an editable install is found).
"""

import os
import site
import sys

PYTHON_PATH = {python_path!r}


def _put_first(paths):
    before = list(sys.path)
    for path in paths:
        if path and os.path.isdir(path):
            site.addsitedir(path)
    added = [path for path in sys.path if path not in before]
    sys.path[:] = added + before


_put_first([*os.environ.get("PYTHONPATH", "").split(os.pathsep), *PYTHON_PATH])

from {ADAPTER_MODULE} import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
'''


def write_repository(
    out_dir: Path,
    models_dir: Path,
    max_batch_size: int = 32,
    device: str = "auto",
    instances: int = 1,
    python_path: list[str] | None = None,
    models: list[ServedModel] | None = None,
) -> list[Path]:
    """Write one folder per served model under `out_dir`; returns the folders."""
    python_path = default_python_path() if python_path is None else python_path
    folders = []
    for model in models if models is not None else served_models():
        folder = out_dir / model.name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        config = config_pbtxt(model, max_batch_size, device, instances, models_dir.resolve())
        (folder / "config.pbtxt").write_text(config)
        (folder / "1" / "model.py").write_text(adapter_source(model.name, python_path))
        folders.append(folder)
    return folders
