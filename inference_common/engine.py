"""OpenVINO runtime wrapper: one read model, compiled once per input shape.

Networks such as CenterFace declare a fixed input size; reshaping to the real size and compiling
a static model runs faster on CPU than a dynamic one, and an image size seen once (a video, a
camera) is seen again, so compiled models are kept in a small LRU cache keyed by shape.
"""

import threading
from collections import OrderedDict
from functools import cache
from pathlib import Path

import numpy as np
import openvino as ov


@cache
def core() -> ov.Core:
    return ov.Core()


class Engine:
    """Runs one network on NCHW float32 blobs; thread-safe."""

    def __init__(self, model_path: Path, device: str = "CPU", cache_size: int = 8) -> None:
        self._model_path = model_path
        self._device = device
        self._cache_size = cache_size
        self._compiled: OrderedDict[tuple[int, ...], ov.CompiledModel] = OrderedDict()
        self._lock = threading.Lock()
        self._model = core().read_model(model_path)
        self.input_name = self._model.inputs[0].get_any_name()

    def _compiled_for(self, shape: tuple[int, ...]) -> ov.CompiledModel:
        with self._lock:
            compiled = self._compiled.get(shape)
            if compiled is not None:
                self._compiled.move_to_end(shape)
                return compiled
            model = core().read_model(self._model_path)
            model.reshape({self.input_name: list(shape)})
            compiled = core().compile_model(model, self._device, {"PERFORMANCE_HINT": "LATENCY"})
            self._compiled[shape] = compiled
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
            return compiled

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        """Run the network on `blob` (N, C, H, W) float32; returns the outputs in model order."""
        request = self._compiled_for(tuple(blob.shape)).create_infer_request()
        request.infer({0: blob})
        return [np.array(tensor.data) for tensor in request.output_tensors]
