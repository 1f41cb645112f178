"""Triton's Python back end over our served models: the class every generated `model.py` re-exports.

It is a thin adapter, like our own OIP server: `initialize` finds the `ServedModel` named in the
model configuration, makes sure its files are in the models folder and loads it once; `execute`
runs `parse_params` and `predict` per request. Nothing of a pipeline is repeated here.

Each request is answered on its own: the dynamic batcher queues requests of any image size
together, but the Python back end hands them over as a list and never concatenates them, so each
keeps its own batch and image size. A bad request (unknown parameter, empty image) gets an
INVALID_ARG error response (HTTP 400) and the other requests of the same batch still answer.

Tensors cross the stub through DLPack, not `as_numpy()`/`Tensor(name, array)`: the stub of Triton
2.51 (nvidia-pytriton 0.7.0) is built against numpy 1's C ABI, and under numpy 2 those two return
wrong pixels and empty outputs (the dtype record changed layout). DLPack carries dtype, shape and
strides itself, and works the same under numpy 1.

Devices: the instance kind Triton chose (`KIND_AUTO` resolves to GPU where one is visible) is
logged; the networks run on the engine `inference_common.engine.make_engine` picks from
$ANONYMIZER_ENGINE: ONNX Runtime with the TensorRT or CUDA provider on a GPU (`auto` or
`onnxruntime`), OpenVINO on a CPU.
"""

import ctypes
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python stub

from anonymizer_shared import wire
from anonymizer_shared.wire import PROTOCOL_PARAMETERS
from inference_common.errors import BadRequest
from inference_common.models import default_models_dir, fetch_models
from inference_common.serving import ServedModel
from inference_triton.repository import served_models

logger = logging.getLogger(__name__)

# DLPack says a consumer renames the capsule it took to "used_dltensor"; Triton 2.51 renames it to
# "used_dlpack", so numpy's capsule destructor would print an error for every output tensor. Triton
# owns the tensor (and calls its deleter) either way; the standard name only silences numpy.
_USED_CAPSULE = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def output_tensor(name: str, array: np.ndarray) -> Any:
    """A `pb_utils.Tensor` holding `array`, handed over through DLPack (see the module docstring)."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED_CAPSULE)
    return tensor


def config_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """`parameters` of a Triton model configuration as plain strings."""
    return {key: value.get("string_value", "") for key, value in (model_config.get("parameters") or {}).items()}


class TritonPythonModel:
    """One instance of one served model inside Triton."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        name = args.get("model_name") or config["name"]
        models = {model.name: model for model in served_models()}
        if name not in models:
            raise ValueError(f"no bundled model named '{name}'; bundled models: {sorted(models)}")
        self.model: ServedModel = models[name]
        models_dir = Path(config_parameters(config).get("models_dir") or default_models_dir())
        fetch_models(models_dir)  # a no-op when the files are there and match their checksums
        self.model.load(models_dir)
        logger.info(
            "loaded %s from %s on a %s instance (%s)",
            name,
            models_dir,
            args.get("model_instance_kind", "?"),
            args.get("model_instance_name", "?"),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        try:
            images = self._images(request)
            params = self.model.parse_params(self._parameters(request))
            outputs = self.model.predict(images, params)
        except BadRequest as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # one failing request must not take the batch down; the log has the cause
            logger.exception("model %s failed on a request", self.model.name)
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"model {self.model.name} failed: {type(exc).__name__}: {exc}")
            )
        return pb_utils.InferenceResponse(
            output_tensors=[output_tensor(name, outputs[name]) for name in self.model.outputs()]
        )

    @staticmethod
    def _images(request: Any) -> np.ndarray:
        """IMAGE as (B, H, W, 3) uint8 RGB; Triton has already checked the datatype and the dims."""
        tensor = pb_utils.get_input_tensor_by_name(request, wire.INPUT_IMAGE)
        if tensor is None:
            raise BadRequest(f"the request has no input {wire.INPUT_IMAGE}")
        images = np.from_dlpack(tensor)
        if images.ndim != 4 or images.shape[3] != 3 or 0 in images.shape:
            raise BadRequest(
                f"input {wire.INPUT_IMAGE} must have shape [B, H, W, 3] with positive sizes, got {list(images.shape)}"
            )
        return images

    @staticmethod
    def _parameters(request: Any) -> dict[str, Any]:
        """The request's parameters meant for the model (the protocol's own are left out)."""
        raw = request.parameters()
        parameters = json.loads(raw) if raw else {}
        return {key: value for key, value in parameters.items() if key not in PROTOCOL_PARAMETERS}
