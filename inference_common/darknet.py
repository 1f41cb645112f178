"""A Darknet network (`.cfg` and `.weights`, AlexeyAB's format) rebuilt as an ONNX graph, so that
OpenVINO and ONNX Runtime run it: OpenCV 5 no longer reads Darknet files and OpenVINO never did.

The layers YOLOv4-tiny uses are supported: convolution (batch norm folded into its weights and
bias), leaky ReLU, max-pool, route (concatenation, and `groups`/`group_id`: one slice of the
channels), nearest upsample and the YOLO head. Anything else in a cfg is refused by name.

The graph takes `images`, float32 NCHW RGB in 0..1, of any height and width that are multiples of
the network's stride (32), and answers, over both heads together:
- `boxes` (B, N, 4): x1, y1, x2, y2 in input pixels;
- `scores` (B, N, C): objectness x class probability, as Darknet scores a detection.
Row n of head h is anchor a, cell (y, x) in that order. The decoding follows Darknet's yolo layer:
centre = (sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2 + cell) * stride, size = exp(t) * anchor.
"""

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np

from anonymizer_shared.files import atomic_write
from inference_common.errors import ModelFetchError

logger = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when the graph this module builds changes, so converted models are made again
INPUT = "images"
OUTPUT_BOXES, OUTPUT_SCORES = "boxes", "scores"
LEAKY_SLOPE = 0.1  # Darknet's leaky activation
BN_EPSILON = 1e-5  # AlexeyAB's normalize_cpu: (x - mean) / sqrt(variance + .00001)
OPSET = 17
IR_VERSION = 8  # what opset 17 needs; the newest onnx writes a later one, which ONNX Runtime 1.23 refuses


@dataclass
class Section:
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise ValueError(f"[{self.kind}] has no {key}")
            return default
        return int(self.options[key])

    def ints(self, key: str) -> list[int]:
        return [int(part) for part in self.options[key].split(",") if part.strip()]


def parse_cfg(text: str) -> list[Section]:
    """The sections of a Darknet cfg in order, [net] first; comments and blank lines dropped."""
    sections: list[Section] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            sections.append(Section(header.group(1)))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ValueError(f"cannot read cfg line {raw!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ValueError("a Darknet cfg starts with [net]")
    return sections


def read_weights(data: bytes) -> np.ndarray:
    """The float32 parameters of a `.weights` file, after its header (version, images seen)."""
    major, minor, _revision = np.frombuffer(data[:12], np.int32)
    seen_bytes = 8 if major * 10 + minor >= 2 else 4  # `seen` became 64-bit in format 0.2
    return np.frombuffer(data[12 + seen_bytes :], np.float32)


class _Graph:
    """Collects ONNX nodes and initialisers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initialisers: list = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initialisers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], exact: str | None = None, **attributes: object) -> str:
        """Add a node; its output is named `exact` where given (a layer's output), else made unique."""
        output = exact or self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


def darknet_to_onnx(cfg_text: str, weights: bytes, name: str = "darknet"):
    """The ONNX model (onnx.ModelProto) of a Darknet cfg and its weights; see the module docstring.
    Each layer's output is named after its index and kind (`layer_7_convolutional`), so a test can
    compare it with another implementation's layer by layer."""
    from onnx import TensorProto, helper

    sections = parse_cfg(cfg_text)
    params = read_weights(weights)
    graph = _Graph()
    offset = 0
    outputs: list[str] = []  # per layer: its output tensor
    channels: list[int] = []
    strides: list[int] = []
    heads: list[tuple[str, str]] = []
    current, depth, stride = INPUT, sections[0].int("channels", 3), 1
    for index, section in enumerate(sections[1:]):
        tag = f"layer_{index}_{section.kind}"
        if section.kind == "convolutional":
            current, depth, offset = _convolution(graph, section, current, depth, params, offset, tag)
            stride *= section.int("stride", 1)
        elif section.kind == "maxpool":
            size, step = section.int("size", 1), section.int("stride", 1)
            if step != size:
                raise ValueError(f"layer {index}: maxpool with stride {step} != size {size} is not supported")
            current = graph.op("MaxPool", [current], tag, kernel_shape=[size, size], strides=[step, step])
            stride *= step
        elif section.kind == "route":
            sources = [source if source >= 0 else index + source for source in section.ints("layers")]
            groups, group = section.int("groups", 1), section.int("group_id", 0)
            parts = []
            for source in sources:
                width = channels[source] // groups
                part = outputs[source]
                if groups > 1:
                    starts, ends = graph.const("start", [group * width]), graph.const("end", [(group + 1) * width])
                    part = graph.op("Slice", [part, starts, ends, graph.const("axis", [1])])
                parts.append(part)
            current = parts[0] if len(parts) == 1 else graph.op("Concat", parts, axis=1)
            current = graph.op("Identity", [current], tag)
            depth = sum(channels[source] // groups for source in sources)
            stride = strides[sources[0]]
        elif section.kind == "upsample":
            step = section.int("stride", 2)
            scales = graph.const("scales", np.array([1, 1, step, step], np.float32))
            current = graph.op("Resize", [current, "", scales], tag, mode="nearest")
            stride //= step
        elif section.kind == "yolo":
            heads.append(_yolo_head(graph, section, current, stride, tag))
        else:
            raise ValueError(f"layer {index}: Darknet layer [{section.kind}] is not supported")
        outputs.append(current)
        channels.append(depth)
        strides.append(stride)
    if offset != len(params):
        raise ValueError(f"the weights hold {len(params)} values, the cfg reads {offset}: they do not belong together")
    if not heads:
        raise ValueError("the cfg has no [yolo] layer")
    graph.op("Concat", [box for box, _ in heads], OUTPUT_BOXES, axis=1)
    graph.op("Concat", [score for _, score in heads], OUTPUT_SCORES, axis=1)
    classes = sections[-1].int("classes") if sections[-1].kind == "yolo" else None
    depth_in = sections[0].int("channels", 3)
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            name,
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", depth_in, "height", "width"])],
            [
                helper.make_tensor_value_info(OUTPUT_BOXES, TensorProto.FLOAT, ["batch", "detections", 4]),
                helper.make_tensor_value_info(OUTPUT_SCORES, TensorProto.FLOAT, ["batch", "detections", classes]),
            ],
            graph.initialisers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="anonymizer darknet converter",
        producer_version=str(CONVERTER_VERSION),
        ir_version=IR_VERSION,
    )
    return model


def _convolution(
    graph: _Graph, section: Section, source: str, depth: int, params: np.ndarray, offset: int, tag: str
) -> tuple[str, int, int]:
    """One [convolutional] layer: its output, its channels and the offset after its parameters."""
    filters, size, step = section.int("filters"), section.int("size"), section.int("stride", 1)
    groups = section.int("groups", 1)
    padding = size // 2 if section.int("pad", 0) else section.int("padding", 0)
    activation = section.options.get("activation", "logistic")
    batch_norm = bool(section.int("batch_normalize", 0))

    def take(count: int) -> np.ndarray:
        nonlocal offset
        if offset + count > len(params):
            raise ValueError(f"{tag}: the weights end before this layer's {count} values")
        values = params[offset : offset + count]
        offset += count
        return values

    bias = take(filters).copy()  # Darknet stores the bias (or batch norm's beta) first
    if batch_norm:
        gamma, mean, variance = take(filters), take(filters), take(filters)
    kernel = take(filters * (depth // groups) * size * size).reshape(filters, depth // groups, size, size).copy()
    if batch_norm:
        factor = gamma / np.sqrt(variance + BN_EPSILON)
        kernel *= factor[:, None, None, None]
        bias = bias - mean * factor
    conv = graph.op(
        "Conv",
        [source, graph.const("weight", kernel.astype(np.float32)), graph.const("bias", bias.astype(np.float32))],
        tag if activation == "linear" else None,
        kernel_shape=[size, size],
        strides=[step, step],
        pads=[padding] * 4,
        group=groups,
    )
    if activation == "leaky":
        conv = graph.op("LeakyRelu", [conv], tag, alpha=LEAKY_SLOPE)
    elif activation != "linear":
        raise ValueError(f"{tag}: activation {activation} is not supported")
    return conv, filters, offset


def _yolo_head(graph: _Graph, section: Section, source: str, stride: int, tag: str) -> tuple[str, str]:
    """Decode one [yolo] layer's input (B, A * (5 + C), h, w) into boxes (B, A*h*w, 4) and scores (B, A*h*w, C)."""
    anchors = np.array(section.ints("anchors"), np.float32).reshape(-1, 2)[section.ints("mask")]
    classes, count = section.int("classes"), len(anchors)
    scale = float(section.options.get("scale_x_y", 1))
    if section.int("new_coords", 0):
        raise ValueError(f"{tag}: new_coords=1 (scaled YOLOv4) is not supported")
    shape = graph.const("shape", np.array([0, count, 5 + classes, -1], np.int64))
    grid = graph.op("Transpose", [graph.op("Reshape", [source, shape])], perm=[0, 1, 3, 2])  # (B, A, h*w, 5 + C)

    def columns(start: int, end: int) -> str:
        return graph.op("Slice", [grid, graph.const("s", [start]), graph.const("e", [end]), graph.const("a", [3])])

    # The cell (x, y) of every row: from the input's own height and width, so any size runs.
    dims = graph.op("Shape", [source])
    height = graph.op("Gather", [dims, graph.const("h", np.array(2, np.int64))])
    columns_count = graph.op("Gather", [dims, graph.const("w", np.array(3, np.int64))])
    width = graph.op("Cast", [columns_count], to=1)  # float: the cell's x and y come from float arithmetic
    cells = graph.op("Cast", [graph.op("Mul", [height, columns_count])], to=1)
    index = graph.op(
        "Range", [graph.const("zero", np.array(0, np.float32)), cells, graph.const("one", np.array(1, np.float32))]
    )
    row = graph.op("Floor", [graph.op("Div", [index, width])])
    column = graph.op("Sub", [index, graph.op("Mul", [row, width])])
    unsqueeze = graph.const("axes", np.array([1], np.int64))
    cell = graph.op(
        "Concat", [graph.op("Unsqueeze", [column, unsqueeze]), graph.op("Unsqueeze", [row, unsqueeze])], axis=1
    )

    offset = graph.op("Sigmoid", [columns(0, 2)])
    if scale != 1:
        offset = graph.op(
            "Sub",
            [
                graph.op("Mul", [offset, graph.const("k", np.float32(scale))]),
                graph.const("c", np.float32((scale - 1) / 2)),
            ],
        )
    centre = graph.op("Mul", [graph.op("Add", [offset, cell]), graph.const("stride", np.float32(stride))])
    half = graph.op(
        "Mul", [graph.op("Exp", [columns(2, 4)]), graph.const("anchors", anchors.reshape(1, count, 1, 2) / 2)]
    )
    corners = graph.op("Concat", [graph.op("Sub", [centre, half]), graph.op("Add", [centre, half])], axis=3)
    scores = graph.op("Mul", [graph.op("Sigmoid", [columns(4, 5)]), graph.op("Sigmoid", [columns(5, 5 + classes)])])
    boxes = graph.op("Reshape", [corners, graph.const("shape", np.array([0, -1, 4], np.int64))], f"{tag}_boxes")
    scores = graph.op("Reshape", [scores, graph.const("shape", np.array([0, -1, classes], np.int64))], f"{tag}_scores")
    return boxes, scores


# --- made once, at `anonymizer models fetch` ------------------------------------------------------


def provenance(cfg: Path, weights: Path) -> dict[str, object]:
    """What a converted network was made from and by: the record kept beside it."""
    return {
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "cfg_sha256": hashlib.sha256(cfg.read_bytes()).hexdigest(),
        "converter": CONVERTER_VERSION,
        "onnx": version("onnx"),
    }


def record_path(network: Path) -> Path:
    return network.with_suffix(".json")


def is_converted(cfg: Path, weights: Path, network: Path) -> bool:
    """Whether `network` is there and was made from these files by this converter."""
    record = record_path(network)
    if not (network.is_file() and record.is_file()):
        return False
    try:
        return json.loads(record.read_text()) == provenance(cfg, weights)
    except (ValueError, OSError):
        return False


def convert(cfg: Path, weights: Path, network: Path) -> Path:
    """Write the ONNX network of `cfg` and `weights` to `network` unless an up-to-date one is there.
    The record is removed first and written last, so a crash leaves no network that looks valid."""
    if is_converted(cfg, weights, network):
        return network
    try:
        import onnx
    except ImportError as exc:
        raise ModelFetchError("converting the Darknet network needs onnx: install the `inference` extra") from exc
    logger.info("converting %s to ONNX (converter %d, onnx %s)", weights.name, CONVERTER_VERSION, version("onnx"))
    record = record_path(network)
    record.unlink(missing_ok=True)
    try:
        model = darknet_to_onnx(cfg.read_text(), weights.read_bytes(), network.stem)
    except ValueError as exc:
        raise ModelFetchError(f"cannot convert {weights.name}: {exc}") from exc
    onnx.checker.check_model(model)
    atomic_write(network, model.SerializeToString())
    atomic_write(record, json.dumps(provenance(cfg, weights)))
    return network
