"""The inference server: any set of `ServedModel`s behind HTTP, speaking the Open Inference
Protocol (`oip`, with Triton's extensions in `triton_extensions` and `shared_memory`) and BMW's
inference-API endpoints (`bmw`). `create_app` in `app` puts them together."""

from inference_common.server.app import create_app

__all__ = ["create_app"]
