"""The runtimes the networks run on, behind one interface: `infer(images) -> outputs`, where
`images` is a batch (B, H, W, 3) of uint8 RGB pixels and each network declares the `PixelFormat`
it was trained on. OpenVINO folds that conversion (type, layout, channel order, mean, scale) into
the compiled network, where it costs nothing beside the first layer's own reorder; done outside,
with `cv2.dnn.blobFromImage`, it took 20-30 ms per 1080p frame.

- `Engine` (OpenVINO, the default, CPU): networks such as CenterFace declare a fixed input size;
  reshaping to the real size and compiling a static model runs faster on CPU than a dynamic one,
  and an image size seen once (a video, a camera) is seen again, so compiled models are kept in
  a small LRU cache keyed by shape.
- `OnnxRuntimeEngine`: ONNX Runtime with the best provider it has (TensorRT, CUDA, then CPU), for
  GPUs, e.g. inside Triton. Every input and output dimension is made dynamic first.

`make_engine` picks one from $ANONYMIZER_ENGINE (`openvino`, `onnxruntime`, or `auto`: ONNX
Runtime where it offers a GPU provider, OpenVINO otherwise). OpenVINO infers in the precision its
CPU plugin picks (bf16 where the CPU has AMX or AVX-512 bf16, f32 otherwise) unless
$ANONYMIZER_INFERENCE_PRECISION names one (`f32` measures the AVX2 path on a bf16 machine).
"""

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import openvino as ov
from openvino.preprocess import PrePostProcessor


@dataclass(frozen=True)
class PixelFormat:
    """What a network takes: NCHW float32 of (pixel - mean) / scale, channels RGB or BGR."""

    mean: float = 0.0
    scale: float = 1.0
    bgr: bool = False

    def blob(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> the network's NCHW float32, in numpy (engines without a pre-processor)."""
        pixels = images[..., ::-1] if self.bgr else images
        blob = pixels.transpose(0, 3, 1, 2).astype(np.float32)
        if self.mean:
            blob -= self.mean
        if self.scale != 1.0:
            blob /= self.scale
        return blob


@cache
def core() -> ov.Core:
    return ov.Core()


PRECISION_ENV = "ANONYMIZER_INFERENCE_PRECISION"
PRECISIONS = ("f32", "bf16", "f16")


def inference_precision() -> str:
    """`f32`, `bf16` or `f16`: $ANONYMIZER_INFERENCE_PRECISION, else what OpenVINO's CPU plugin picks here."""
    forced = os.environ.get(PRECISION_ENV, "").lower()
    if forced and forced not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={forced!r} is not one of {', '.join(PRECISIONS)}")
    return forced or core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def cpu_description() -> str:
    """The CPU OpenVINO runs on, what it can use there and the precision it infers in, so that a
    benchmark's figures say which kind of machine they come from (AMX bf16 or AVX2 f32 differ 3x)."""
    engine = core()
    name = engine.get_property("CPU", "FULL_DEVICE_NAME")
    capabilities = ", ".join(engine.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    limit = f" (limited to {isa} by ONEDNN_MAX_CPU_ISA)" if isa else ""
    return f"CPU: {name}; OpenVINO capabilities: {capabilities}{limit}; inference precision: {inference_precision()}"


class Engine:
    """Runs one network on uint8 RGB batches with OpenVINO; thread-safe."""

    name = "openvino"

    def __init__(self, model_path: Path, pixels: PixelFormat, device: str = "CPU", cache_size: int = 8) -> None:
        self._pixels = pixels
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
            batch, height, width, _ = shape
            model.reshape({self.input_name: [batch, 3, height, width]})
            model = self._with_pixel_input(model)
            config = {"PERFORMANCE_HINT": "LATENCY"}
            if os.environ.get(PRECISION_ENV):
                config["INFERENCE_PRECISION_HINT"] = inference_precision()
            compiled = core().compile_model(model, self._device, config)
            self._compiled[shape] = compiled
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
            return compiled

    def _with_pixel_input(self, model: ov.Model) -> ov.Model:
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess()
        steps.convert_element_type(ov.Type.f32)
        if self._pixels.bgr:
            steps.reverse_channels()
        if self._pixels.mean:
            steps.mean(self._pixels.mean)
        if self._pixels.scale != 1.0:
            steps.scale(self._pixels.scale)
        return ppp.build()

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """Run the network on `images` (B, H, W, 3) uint8 RGB; returns the outputs in model order."""
        images = np.ascontiguousarray(images)
        request = self._compiled_for(tuple(images.shape)).create_infer_request()
        request.infer({0: images}, share_inputs=True)  # no copy: the pixels outlive the call
        return [np.array(tensor.data) for tensor in request.output_tensors]


ENGINE_ENV = "ANONYMIZER_ENGINE"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeEngine:
    """Runs one network on uint8 RGB batches with ONNX Runtime; thread-safe."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, pixels: PixelFormat, providers: list[str] | None = None) -> None:
        self._pixels = pixels
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

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """Run the network on `images` (B, H, W, 3) uint8 RGB; returns the outputs in model order."""
        return self._session.run(None, {self.input_name: self._pixels.blob(images)})


def make_engine(
    model_path: Path, pixels: PixelFormat, openvino_path: Path | None = None
) -> "Engine | OnnxRuntimeEngine":
    """The engine $ANONYMIZER_ENGINE asks for (default `openvino`); OpenVINO runs `openvino_path`
    where one is given (a network made for it, e.g. INT8), ONNX Runtime always `model_path`."""
    choice = os.environ.get(ENGINE_ENV, "openvino").lower()
    if choice not in ("openvino", "onnxruntime", "auto"):
        raise ValueError(f"{ENGINE_ENV}={choice!r} is not one of openvino, onnxruntime, auto")
    if choice == "auto":
        try:
            import onnxruntime
        except ImportError:
            choice = "openvino"
        else:
            has_gpu = any(p in onnxruntime.get_available_providers() for p in GPU_PROVIDERS)
            choice = "onnxruntime" if has_gpu else "openvino"
    if choice == "onnxruntime":
        return OnnxRuntimeEngine(model_path, pixels)
    return Engine(openvino_path or model_path, pixels)
