"""`anonymizer triton-repo OUT_DIR`: a Triton model repository for every bundled model, and the real
`tritonserver` binary that the `nvidia-pytriton` wheel carries, for running that repository on a CPU.

The repository holds, per model, `config.pbtxt` (the contract of DESIGN.md section 3: `IMAGE`, the
task's outputs, `parameters` task/labels/defaults/presets, dynamic batching, an instance group) and
`1/model.py`, a generated adapter that only puts our code on `sys.path` and re-exports
`inference_common.triton_model.TritonPythonModel`: no pipeline logic is copied into the repository.

GPU with a CPU fallback: `--device auto` (the default) writes `kind: KIND_AUTO`, which Triton resolves
when it loads the model: instances on every visible GPU if there is one, on the CPU otherwise. The
same repository therefore serves on a GPU machine and on a CPU-only CI runner. `--device gpu`
writes `KIND_GPU` (Triton then refuses to load the model without a GPU, which is what someone asking
for a GPU wants to hear); `--device cpu` writes `KIND_CPU`.
"""

import argparse
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inference_common.errors import ModelFetchError
from inference_common.models import PROJECT_ROOT, default_models_dir, download_wheel, sha256_of
from inference_common.serving import ServedModel

logger = logging.getLogger(__name__)

KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ADAPTER_MODULE = "inference_common.triton_model"

# The Triton server binary, its Python back end and the stubs per Python version, in a pinned wheel.
# It is fetched like the model files (pip download --no-deps, checked against its sha256) rather than
# installed: nvidia-pytriton's Python package requires numpy<2, and we only need its binaries.
TRITONSERVER_PACKAGE = "nvidia-pytriton"
TRITONSERVER_VERSION = "0.7.0"  # Triton 2.51.0
TRITONSERVER_WHEEL_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"
TRITONSERVER_DIR_ENV = "ANONYMIZER_TRITONSERVER_DIR"


# --- the model repository ------------------------------------------------------------------------


def served_models() -> list[ServedModel]:
    """Every bundled model, detection and segmentation."""
    from inference_detection.server import detection_models
    from inference_segmentation.server import segmentation_models

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


def _triton_repo(args: argparse.Namespace) -> int:
    python_path = (
        default_python_path() if args.python_path is None else [p for p in args.python_path.split(os.pathsep) if p]
    )
    folders = write_repository(
        args.out_dir, args.models_dir, args.max_batch_size, args.device, args.instances, python_path
    )
    for folder in folders:
        sys.stdout.write(f"{folder}\n")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `triton-repo` on the CLI."""
    repo = commands.add_parser(
        "triton-repo",
        help="write a Triton model repository (Python back end) for every bundled model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    repo.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the model repository to write")
    repo.add_argument(
        "--models-dir",
        type=Path,
        default=default_models_dir(),
        help="where the server finds the model files, written into config.pbtxt "
        "(default: $ANONYMIZER_MODELS_DIR or models/ in the project)",
    )
    repo.add_argument(
        "--max-batch-size", type=_positive, default=32, help="images per request and per batch (default 32)"
    )
    repo.add_argument(
        "--device",
        choices=sorted(KINDS),
        default="auto",
        help="auto: on the GPUs if Triton sees any, else on the CPU (KIND_AUTO); gpu: KIND_GPU; cpu: KIND_CPU",
    )
    repo.add_argument("--instances", type=_positive, default=1, help="model instances per device (default 1)")
    repo.add_argument(
        "--python-path",
        default=None,
        help="colon-separated folders the Triton stub adds to sys.path (default: this Python's site-packages "
        "and the project; '' when the server's own Python has the project installed)",
    )
    repo.set_defaults(handler=_triton_repo)


# --- the tritonserver binary ---------------------------------------------------------------------


@dataclass(frozen=True)
class TritonServer:
    """The extracted `tritonserver` of the pinned nvidia-pytriton wheel, ready for this Python."""

    root: Path  # holds pytriton/tritonserver/ and nvidia_pytriton.libs/ as the wheel lays them out

    @property
    def binary(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "backends"

    def command(self, repository: Path, http_port: int) -> list[str]:
        """Serve `repository` over HTTP only, on loopback."""
        return [
            str(self.binary),
            f"--model-repository={repository}",
            f"--backend-directory={self.backends}",
            f"--http-port={http_port}",
            "--http-address=127.0.0.1",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-timeout-secs=5",
        ]

    def environment(self) -> dict[str, str]:
        """The Python stub links libpython; it must load this Python's, not another one on the system."""
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = [libdir, os.environ.get("LD_LIBRARY_PATH", "")]
        return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(path for path in paths if path)}


def default_tritonserver_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = cache / "anonymizer" / f"{TRITONSERVER_PACKAGE}-{TRITONSERVER_VERSION}"
    return Path(os.environ.get(TRITONSERVER_DIR_ENV) or default)


def fetch_tritonserver(target: Path | None = None) -> TritonServer:
    """Download and extract the pinned wheel's `tritonserver` (once), with the Python back-end stub
    for the running Python beside the back end, where Triton looks for it."""
    server = TritonServer(target or default_tritonserver_dir())
    stub_name = "triton_python_backend_stub"
    stub = server.backends / "python" / stub_name
    if not stub.is_file():
        server.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=server.root.parent) as tmp:
            wheel = download_wheel(TRITONSERVER_PACKAGE, TRITONSERVER_VERSION, Path(tmp))
            if sha256_of(wheel) != TRITONSERVER_WHEEL_SHA256:
                raise ModelFetchError(f"{wheel.name} does not match its pinned sha256 {TRITONSERVER_WHEEL_SHA256}")
            staging = Path(tmp) / "root"
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.infolist():
                    if member.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                        archive.extract(member, staging)
                        if not member.is_dir():  # zipfile drops the executable bits
                            (staging / member.filename).chmod(0o755)
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            staged = TritonServer(staging)
            source = staged.root / "pytriton" / "tritonserver" / "python_backend_stubs" / version / stub_name
            if not source.is_file():
                raise ModelFetchError(f"{wheel.name} has no Python back-end stub for Python {version}")
            shutil.copy2(source, staged.backends / "python" / stub_name)
            for name in ("nvidia_pytriton.libs", "pytriton"):  # the stub, the completion mark, last
                shutil.rmtree(server.root / name, ignore_errors=True)
                (staging / name).replace(server.root / name)
    return server


def check_tritonserver(server: TritonServer) -> str | None:
    """None if the binary runs here, else why not."""
    try:
        result = subprocess.run(
            [str(server.binary), "--help"], capture_output=True, text=True, timeout=60, env=server.environment()
        )
    except OSError as exc:
        return f"{server.binary} cannot be executed here: {exc}"
    if result.returncode != 0 and "Usage" not in result.stdout + result.stderr:
        return f"{server.binary} --help failed ({result.returncode}): {(result.stderr or result.stdout)[-500:]}"
    return None
