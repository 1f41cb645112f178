"""The runtimes the networks run on, behind one interface: `infer(blob) -> outputs`.

- `Engine` (OpenVINO, the default, CPU): networks such as CenterFace declare a fixed input size;
  reshaping to the real size and compiling a static model runs faster on CPU than a dynamic one,
  and an image size seen once (a video, a camera) is seen again, so compiled models are kept in
  a small LRU cache keyed by shape.
- `OnnxRuntimeEngine`: ONNX Runtime with the best provider it has (TensorRT, CUDA, then CPU), for
  GPUs, e.g. inside Triton. Every input and output dimension is made dynamic first.

`make_engine` picks one from $ANONYMIZER_ENGINE (`openvino`, `onnxruntime`, or `auto`: ONNX
Runtime where it offers a GPU provider, OpenVINO otherwise).
"""

import os
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
            model = self._model.clone()  # reshape a copy: the read model stays the template for other shapes
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


ENGINE_ENV = "ANONYMIZER_ENGINE"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeEngine:
    """Runs one network on NCHW float32 blobs with ONNX Runtime; thread-safe."""

    def __init__(self, model_path: Path, providers: list[str] | None = None) -> None:
        import onnx
        import onnxruntime

        model = onnx.load(str(model_path))
        for value in [*model.graph.input, *model.graph.output]:  # fixed sizes (CenterFace: 10x3x32x32) -> dynamic
            for index, dim in enumerate(value.type.tensor_type.shape.dim):
                dim.dim_param = f"{value.name}_{index}"
        available = onnxruntime.get_available_providers()
        chosen = providers or [p for p in (*GPU_PROVIDERS, "CPUExecutionProvider") if p in available]
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), providers=chosen)
        self.input_name = self._session.get_inputs()[0].name
        self.providers = self._session.get_providers()

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        """Run the network on `blob` (N, C, H, W) float32; returns the outputs in model order."""
        return self._session.run(None, {self.input_name: blob})


def make_engine(model_path: Path) -> "Engine | OnnxRuntimeEngine":
    """The engine $ANONYMIZER_ENGINE asks for (default `openvino`)."""
    choice = os.environ.get(ENGINE_ENV, "openvino").lower()
    if choice == "auto":
        try:
            import onnxruntime
        except ImportError:
            return Engine(model_path)
        has_gpu = any(p in onnxruntime.get_available_providers() for p in GPU_PROVIDERS)
        return OnnxRuntimeEngine(model_path) if has_gpu else Engine(model_path)
    if choice == "onnxruntime":
        return OnnxRuntimeEngine(model_path)
    if choice != "openvino":
        raise ValueError(f"{ENGINE_ENV}={choice!r} is not one of openvino, onnxruntime, auto")
    return Engine(model_path)
