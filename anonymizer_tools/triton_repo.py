"""`anonymizer triton-repo OUT_DIR`: write a Triton model repository for every bundled model (see
`inference_triton.repository`)."""

import argparse
import os
import sys
from pathlib import Path

from inference_common.models import default_models_dir

KINDS = ("auto", "cpu", "gpu")


def _triton_repo(args: argparse.Namespace) -> int:
    from inference_triton.repository import default_python_path, write_repository  # loads the models' code

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
        description="Per model: config.pbtxt (IMAGE in, the task's outputs, task/labels/defaults/presets "
        "parameters, dynamic batching, an instance group) and 1/model.py, an adapter that re-exports "
        "inference_triton.model.TritonPythonModel. --device auto runs on the GPUs Triton sees, else on the CPU.",
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
        choices=KINDS,
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
