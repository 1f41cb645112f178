"""The segmentation server: every bundled segmentation model behind the Open Inference Protocol."""

from fastapi import FastAPI

from inference_common.server import create_app
from inference_common.serving import ServedModel
from inference_common.settings import ServerSettings
from inference_segmentation.text import PPOCRTextSeg

DEFAULT_PORT = 8090


def segmentation_models() -> list[ServedModel]:
    return [PPOCRTextSeg()]


def create_segmentation_app(settings: ServerSettings) -> FastAPI:
    return create_app(segmentation_models(), settings)
