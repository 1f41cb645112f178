"""A network alone in each precision this CPU offers, natively and limited to AVX2, in one run:
the figures behind $ANONYMIZER_INT8's `auto` and the way to measure the AVX2 path on a newer CPU.

    .venv/bin/python -m bench.precision [--network centerface|yolov4_tiny] [--repeats 10]

Rows: the float network in the precision OpenVINO picks here (bf16 on CPUs with AMX or AVX-512
bf16), the float network forced to f32, and the INT8 network (`models fetch` makes it); each at
two sizes, batch 1, median ms of the network call alone: CenterFace at 1024x768 (a photo) and
1920x1088 (a video frame), YOLOv4-tiny at 608x448 (its first pass on a 640x480 frame) and 448x448
(a tile of its upscaled pass).
Each instruction-set setting runs in a child process, since oneDNN reads ONEDNN_MAX_CPU_ISA
once, when it loads: `native`, then `AVX2` (no AVX-512, no VNNI, no bf16, no AMX), in f32, as
OpenVINO still chooses bf16 from the CPU's flags under the limit and then fails to compile
(so measuring the AVX2 path of the service needs `ANONYMIZER_INFERENCE_PRECISION=f32` as well). That the limit
took effect shows in the figures themselves: where the CPU has VNNI or bf16, INT8 and the
native precision are slower under it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from inference_common.engine import PRECISION_ENV, Engine, inference_precision
from inference_common.models import default_models_dir, fetch_models
from inference_common.quantisation import CENTERFACE_INT8, YOLO_INT8, describe_machine, quantise

NETWORKS = {
    "centerface": (CENTERFACE_INT8, ((1024, 768), (1920, 1088))),
    "yolov4_tiny": (YOLO_INT8, ((608, 448), (448, 448))),
}
ISA_SETTINGS = {"native": None, "AVX2": "AVX2"}


def median_ms(engine: Engine, width: int, height: int, repeats: int) -> float:
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    engine.infer(image)  # compiles the network for this size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.infer(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(network: str, repeats: int) -> dict[str, list[float]]:
    """This process's figures: network -> ms per size. Float networks run in the precision asked."""
    models_dir = default_models_dir()
    quantisable, sizes = NETWORKS[network]
    native = inference_precision()
    rows = {}
    networks = {
        f"float, {native}": (quantisable.source(models_dir), native),
        "float, f32": (quantisable.source(models_dir), "f32"),  # the same row where native is f32
        "INT8": (quantisable.paths(models_dir)[0], native),
    }
    for label, (path, precision) in networks.items():
        os.environ[PRECISION_ENV] = precision
        engine = Engine(path, quantisable.pixels)
        rows[label] = [median_ms(engine, width, height, repeats) for width, height in sizes]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", choices=NETWORKS, default="centerface")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.network, args.repeats)))
        return
    models_dir = default_models_dir()
    fetch_models(models_dir)
    quantisable, sizes = NETWORKS[args.network]
    quantise(quantisable, models_dir)
    print(describe_machine(models_dir))
    header = "".join(f"{f'{w}x{h} ms':>14}" for w, h in sizes)
    print(f"{'instruction sets':<18}{'network':<14}{header}{'INT8 speed-up':>16}")
    for name, isa in ISA_SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", PRECISION_ENV)}
        if isa:
            # OpenVINO still picks bf16 from the CPU's flags, which oneDNN then cannot run under the limit
            env["ONEDNN_MAX_CPU_ISA"], env[PRECISION_ENV] = isa, "f32"
        child = [
            sys.executable,
            "-m",
            "bench.precision",
            "--child",
            "--network",
            args.network,
            "--repeats",
            str(args.repeats),
        ]
        rows = json.loads(subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout)
        fastest_float = [min(ms[i] for label, ms in rows.items() if label != "INT8") for i in range(len(sizes))]
        for label, ms in rows.items():
            figures = "".join(f"{value:>14.1f}" for value in ms)
            gains = (f"{float_ms / int8_ms:.2f}x" for float_ms, int8_ms in zip(fastest_float, ms, strict=True))
            gain = " / ".join(gains) if label == "INT8" else ""
            print(f"{name:<18}{label:<14}{figures}{gain:>16}")


if __name__ == "__main__":
    main()
