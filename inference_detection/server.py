"""The detection server: every bundled detection model behind the Open Inference Protocol."""

from fastapi import FastAPI

from inference_common.server import create_app
from inference_common.serving import ServedModel
from inference_common.settings import ServerSettings
from inference_detection.centerface import CenterFace
from inference_detection.objects import YoloObjects
from inference_detection.plates import LicensePlate
from inference_detection.text import PPOCRText

DEFAULT_PORT = 8081


def detection_models() -> list[ServedModel]:
    return [CenterFace(), PPOCRText(), LicensePlate(), YoloObjects()]


def create_detection_app(settings: ServerSettings) -> FastAPI:
    return create_app(detection_models(), settings)
