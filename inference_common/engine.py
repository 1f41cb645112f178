"""The runtimes the networks run on, behind one interface: `infer(images) -> outputs`, where
`images` is a batch (B, H, W, 3) of uint8 RGB pixels and each network declares the `PixelFormat`
it was trained on. OpenVINO folds that conversion (type, layout, channel order, mean, scale) into
the compiled network, where it costs nothing beside the first layer's own reorder; done outside,
with `cv2.dnn.blobFromImage`, it took 20-30 ms per 1080p frame.

Image sizes: a collection of photos has hundreds of sizes, and preparing a network for a new input
shape cost 150-300 ms a shape when each one was compiled on its own (a 1024x704 photo then runs in
40 ms), with 5-10 MB kept per shape. So both engines pad every input, right and bottom with black,
up to a *shape bucket* (`bucket_side`: a few sizes per octave, $ANONYMIZER_ENGINE_SIZES_PER_OCTAVE),
and crop the network's spatial outputs back to the image; a fully convolutional network sees the
black border it already saw when inputs were padded to a multiple of 32.

- `Engine` (OpenVINO, the default, CPU): the network is compiled once with dynamic height and width.
  A shape it has not run yet costs 20-35 ms of kernel preparation instead of a compilation, and the
  prepared shapes are bounded ($ANONYMIZER_ENGINE_CACHED_SHAPES, OpenVINO's runtime cache), so memory
  stays flat over any number of sizes. A network that cannot take dynamic shapes falls back to one
  static compilation per bucket, kept in an LRU cache of the same bound.
  A dynamic network is slower than one compiled for a single shape (INT8 YOLOv4-tiny at 608x448: 19
  against 17 ms in the detector; CenterFace at 1920x1088: 114 against 109 ms in bf16), so a shape
  that comes back ($ANONYMIZER_ENGINE_STATIC_AFTER runs: a video's frames, the tiles of a pass) is
  compiled for itself on a background thread, one compilation at a time in the process, while its
  requests go on on the dynamic network; a few such networks are kept
  ($ANONYMIZER_ENGINE_STATIC_SHAPES), the most run. A batch of two or more images runs instead on a
  copy of the dynamic network compiled for $ANONYMIZER_ENGINE_STREAMS streams, split over them, one
  request on each stream's share of the threads.
- `OnnxRuntimeEngine`: ONNX Runtime with the best provider it has (TensorRT, CUDA, then CPU), for
  GPUs, e.g. inside Triton. Every input and output dimension is made dynamic first.

`make_engine` picks one from $ANONYMIZER_ENGINE (`openvino`, `onnxruntime`, or `auto`: ONNX
Runtime where it offers a GPU provider, OpenVINO otherwise). OpenVINO infers in the precision its
CPU plugin picks (bf16 where the CPU has AMX or AVX-512 bf16, f32 otherwise) unless
$ANONYMIZER_INFERENCE_PRECISION names one (`f32` measures the AVX2 path on a bf16 machine).
"""

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import openvino as ov
from openvino.preprocess import PrePostProcessor

from inference_common.engine_settings import EngineSettings

logger = logging.getLogger(__name__)


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


MULTIPLE = 32  # every network here halves its input five times


def bucket_side(side: int, sizes_per_octave: int) -> int:
    """`side` (px) rounded up to its shape bucket: a multiple of 32 that is one of `sizes_per_octave`
    sizes in its octave (e.g. 8: 512, 576, ... 960, then 1024, 1152, ...); 0: a multiple of 32 only."""
    step = MULTIPLE
    if sizes_per_octave:
        octave = 1 << (max(1, side).bit_length() - 1)  # the power of two at or below `side`
        step = max(MULTIPLE, -(-octave // sizes_per_octave // MULTIPLE) * MULTIPLE)
    return -(-side // step) * step


def bucket_shape(shape: tuple[int, ...], sizes_per_octave: int) -> tuple[int, ...]:
    """The (B, H, W, 3) shape a batch of that shape is padded to."""
    batch, height, width, channels = shape
    return batch, bucket_side(height, sizes_per_octave), bucket_side(width, sizes_per_octave), channels


def pad_to(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, h, w, 3) placed top-left in black (B, H, W, 3): boxes in network pixels keep their coordinates."""
    if images.shape == shape:
        return np.ascontiguousarray(images)
    padded = np.zeros(shape, images.dtype)
    padded[:, : images.shape[1], : images.shape[2]] = images
    return padded


def spatial_crop(
    output_shape: tuple[int, ...], padded: tuple[int, int], image: tuple[int, int]
) -> tuple[int, int] | None:
    """(rows, columns) of an output (B, C, h, w) that cover the image, for an output whose height and
    width are the padded input's divided by one stride; None for any other output (YOLO's box lists)."""
    if len(output_shape) != 4 or not output_shape[2] or not output_shape[3]:
        return None
    stride_y, stride_x = padded[0] / output_shape[2], padded[1] / output_shape[3]
    if stride_y != stride_x or stride_y != int(stride_y) or padded[0] % output_shape[2]:
        return None
    stride = int(stride_y)
    return -(-image[0] // stride), -(-image[1] // stride)


def cropped(outputs: list[np.ndarray], padded: tuple[int, int], image: tuple[int, int]) -> list[np.ndarray]:
    """The network's outputs with their spatial maps cut back to the image (copies, so nothing outlives a request)."""
    result = []
    for output in outputs:
        crop = spatial_crop(output.shape, padded, image)
        result.append(np.array(output if crop is None else output[:, :, : crop[0], : crop[1]]))
    return result


@dataclass
class EngineStats:
    """What one network has done: inferences and their seconds, and the input shapes it had to prepare."""

    inferences: int = 0
    seconds: float = 0.0
    new_shapes: int = 0  # shapes prepared (compiled or given kernels), evicted ones counted again
    shapes: int = 0  # shapes prepared and kept now
    static_shapes: int = 0  # shapes with a network compiled for them alone, kept now
    split_batches: int = 0  # batches run split over the CPU's streams


# One background compilation at a time in the process: each takes both cores for 0.1-0.3 s.
STATIC_COMPILER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="static-compile")


def engine_settings() -> EngineSettings:
    return EngineSettings()


class Engine:
    """Runs one network on uint8 RGB batches with OpenVINO; thread-safe."""

    name = "openvino"

    def __init__(
        self, model_path: Path, pixels: PixelFormat, device: str = "CPU", settings: EngineSettings | None = None
    ) -> None:
        self._pixels = pixels
        self._device = device
        self._settings = settings or engine_settings()
        self._lock = threading.Lock()
        self._model = core().read_model(model_path)
        self.input_name = self._model.inputs[0].get_any_name()
        self.network = Path(model_path).stem
        self.stats = EngineStats()
        self._dynamic: ov.CompiledModel | None = None
        self._dynamic_failed = False
        # shapes run (on the dynamic network) or compiled (static fallback), most recent last
        self._shapes: OrderedDict[tuple[int, ...], ov.CompiledModel | None] = OrderedDict()
        self._runs: dict[tuple[int, ...], int] = {}  # runs of each shape kept (prepared or compiled alone)
        self._static: dict[tuple[int, ...], ov.CompiledModel] = {}  # networks of their own for the most run shapes
        self._compiling: set[tuple[int, ...]] = set()
        self._streamed: ov.CompiledModel | None = None  # the dynamic network over several streams
        self._streamed_unavailable = self._settings.streams < 2
        ENGINES.add(self)

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            # kernels prepared per input shape on a dynamic network: bounded, so memory stays flat
            "CPU_RUNTIME_CACHE_CAPACITY": self._settings.cached_shapes,
        }
        if os.environ.get(PRECISION_ENV):
            config["INFERENCE_PRECISION_HINT"] = inference_precision()
        return config

    @property
    def compiled_alone(self) -> frozenset[tuple[int, ...]]:
        """The input shapes (B, H, W, 3) that have a network compiled for them alone now."""
        with self._lock:
            return frozenset(self._static)

    def _compile(self, shape: list[object], config: dict[str, object] | None = None) -> ov.CompiledModel:
        model = self._model.clone()  # reshape a copy: the read model stays the template
        model.reshape({self.input_name: ov.PartialShape(shape)})
        return core().compile_model(self._with_pixel_input(model), self._device, config or self._config())

    def _streamed_network(self) -> ov.CompiledModel | None:
        """The dynamic network compiled to run `streams` requests at once, each on its share of the
        threads; None where streams are off or the network takes no dynamic shapes."""
        with self._lock:
            if self._streamed is None and not self._streamed_unavailable:
                config = {**self._config(), "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self._settings.streams}
                try:
                    self._streamed = self._compile([-1, 3, -1, -1], config)
                except RuntimeError:
                    self._streamed_unavailable = True
            return self._streamed

    def _infer_split(self, network: ov.CompiledModel, padded: np.ndarray) -> list[np.ndarray]:
        """The outputs of `network` on `padded` (B, H, W, 3), its images split over the streams and run at once."""
        parts = np.array_split(padded, min(self._settings.streams, len(padded)))
        requests = [network.create_infer_request() for _ in parts]
        for request, part in zip(requests, parts, strict=True):
            request.start_async({0: np.ascontiguousarray(part)}, share_inputs=True)
        for request in requests:
            request.wait()
        return [
            np.concatenate([request.output_tensors[index].data for request in requests])
            for index in range(len(requests[0].output_tensors))
        ]

    def _compiled_for(self, shape: tuple[int, ...]) -> ov.CompiledModel:
        with self._lock:
            if shape in self._static:
                self._count_run(shape)
                return self._static[shape]
            if shape in self._shapes:
                self._shapes.move_to_end(shape)
                if self._shapes[shape] is None:
                    self._count_run(shape)
                return self._shapes[shape] or self._dynamic
            self.stats.new_shapes += 1
            if self._dynamic is None and not self._dynamic_failed:
                try:
                    self._dynamic = self._compile([-1, 3, -1, -1])
                except RuntimeError:  # a network with fixed internal sizes: one compilation per bucket
                    self._dynamic_failed = True
            batch, height, width, _ = shape
            compiled = None if self._dynamic is not None else self._compile([batch, 3, height, width])
            self._shapes[shape] = compiled
            if len(self._shapes) > self._settings.cached_shapes:
                dropped, _ = self._shapes.popitem(last=False)  # OpenVINO's runtime cache drops its kernels alike
                if dropped not in self._static:
                    self._runs.pop(dropped, None)
            self.stats.shapes = len(self._shapes)
            if compiled is None:
                self._count_run(shape)
            return compiled or self._dynamic

    def _count_run(self, shape: tuple[int, ...]) -> None:
        """Count a run of `shape`; a shape run often enough gets a network of its own (lock held).
        The kept ones are the most run (counts halve now and then, so old habits fade), and a shape
        displaces one only when run twice as often, so shapes taking turns are not compiled over and over."""
        runs = self._runs[shape] = self._runs.get(shape, 0) + 1
        if runs >= 1024:
            self._runs = {kept: count // 2 for kept, count in self._runs.items()}
        limit = self._settings.static_shapes
        if not limit or shape in self._static or shape in self._compiling or runs < self._settings.static_after:
            return
        if len(self._static) + len(self._compiling) >= limit:
            coldest = self._coldest_static()
            if coldest is None or runs <= 2 * self._runs.get(coldest, 0):
                return
        self._compiling.add(shape)
        STATIC_COMPILER.submit(self._compile_static, shape)

    def _coldest_static(self) -> tuple[int, ...] | None:
        """The least run of the shapes with a network of their own (lock held)."""
        return min(self._static, key=lambda kept: self._runs.get(kept, 0), default=None)

    def _compile_static(self, shape: tuple[int, ...]) -> None:
        batch, height, width, _ = shape
        try:
            compiled = self._compile([batch, 3, height, width])
        except RuntimeError:  # the dynamic network goes on serving this shape
            logger.warning("could not compile %s for %s alone; it runs on the dynamic network", self.network, shape)
            compiled = None
        with self._lock:
            self._compiling.discard(shape)
            if compiled is None:
                return
            coldest = self._coldest_static() if len(self._static) >= self._settings.static_shapes else None
            if coldest is not None:
                del self._static[coldest]
                if coldest not in self._shapes:
                    self._runs.pop(coldest, None)
            self._static[shape] = compiled
            self.stats.static_shapes = len(self._static)

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
        started = time.perf_counter()
        shape = bucket_shape(images.shape, self._settings.sizes_per_octave)
        padded = pad_to(images, shape)
        streamed = self._streamed_network() if len(images) > 1 else None
        if streamed is not None:
            raw = self._infer_split(streamed, padded)
        else:
            request = self._compiled_for(shape).create_infer_request()
            request.infer({0: padded}, share_inputs=True)  # no copy: the pixels outlive the call
            raw = [tensor.data for tensor in request.output_tensors]
        outputs = cropped(raw, shape[1:3], images.shape[1:3])
        with self._lock:
            self.stats.split_batches += streamed is not None
            self.stats.inferences += 1
            self.stats.seconds += time.perf_counter() - started
        return outputs


# Every network loaded in this process, for the servers' metrics (time in the networks, shapes prepared).
ENGINES: "weakref.WeakSet[Engine | OnnxRuntimeEngine]" = weakref.WeakSet()


ENGINE_ENV = "ANONYMIZER_ENGINE"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeEngine:
    """Runs one network on uint8 RGB batches with ONNX Runtime; thread-safe."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        pixels: PixelFormat,
        providers: list[str] | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self._pixels = pixels
        self._settings = settings or engine_settings()
        self._lock = threading.Lock()
        self.network = Path(model_path).stem
        self.stats = EngineStats()
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
        ENGINES.add(self)

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """Run the network on `images` (B, H, W, 3) uint8 RGB; returns the outputs in model order."""
        # Buckets here too: TensorRT builds an engine per input shape.
        started = time.perf_counter()
        shape = bucket_shape(images.shape, self._settings.sizes_per_octave)
        blob = self._pixels.blob(pad_to(images, shape))
        outputs = cropped(self._session.run(None, {self.input_name: blob}), shape[1:3], images.shape[1:3])
        with self._lock:
            self.stats.inferences += 1
            self.stats.seconds += time.perf_counter() - started
        return outputs


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
