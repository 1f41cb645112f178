"""Latency of every bundled model at 1280x720 and 1920x1080: in-process (the pipeline alone) and
through the inference server (tritonclient, binary tensors, loopback), and the server's overhead.

    .venv/bin/python -m bench.inference_latency [--repeats 10]
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.http as triton

from anonymizer_shared import wire
from anonymizer_tools.processes import running
from bench.scenes import portraits_scene
from inference_common.models import default_models_dir, fetch_models
from inference_common.quantisation import describe_machine
from inference_detection.server import detection_models
from inference_segmentation.server import segmentation_models

SIZES = ((1280, 720), (1920, 1080))


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: compiles the network for this input size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def remote_call(url: str, model: str, task: wire.Task, image: np.ndarray) -> Callable[[], object]:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    batch = image[None]
    tensor = triton.InferInput(wire.INPUT_IMAGE, list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in wire.outputs_of(task)]
    return lambda: client.infer(model, [tensor], outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    models_dir = default_models_dir()
    fetch_models(models_dir)
    print(describe_machine(default_models_dir()))
    scenes = {size: portraits_scene(*size) for size in SIZES}
    local = {}
    models = [*detection_models(), *segmentation_models()]
    for model in models:
        model.load(models_dir)
        params = model.parse_params({})
        for size, image in scenes.items():
            local[model.name, size] = median_ms(lambda m=model, i=image, p=params: m.predict(i[None], p), args.repeats)
    logs = Path(tempfile.mkdtemp())
    print(f"{'model':<16}{'size':>11}{'in-process ms':>15}{'server ms':>11}{'overhead':>10}")
    with (
        running(["serve-detection"], "/v2/health/ready", logs / "det.log") as detection,
        running(["serve-segmentation"], "/v2/health/ready", logs / "seg.log") as segmentation,
    ):
        for model in models:
            url = detection if model.task is wire.Task.DETECTION else segmentation
            for size, image in scenes.items():
                remote = median_ms(remote_call(url, model.name, model.task, image), args.repeats)
                in_process = local[model.name, size]
                print(
                    f"{model.name:<16}{size[0]:>6}x{size[1]:<4}{in_process:>15.1f}{remote:>11.1f}"
                    f"{remote / in_process:>9.2f}x"
                )


if __name__ == "__main__":
    main()
