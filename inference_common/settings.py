"""Settings of an inference server; every field can be set as ANONYMIZER_INFERENCE_<FIELD>."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference_common.models import default_models_dir


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANONYMIZER_INFERENCE_")

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    models_dir: Path = Field(default_factory=default_models_dir)
    max_image_pixels: int = Field(50_000_000, ge=1, description="largest image accepted, width x height")
    max_body_bytes: int = Field(512 * 1024 * 1024, ge=1, description="largest request body accepted")
    max_batch_size: int = Field(32, ge=1)
    concurrent_inferences: int = Field(2, ge=1, description="inferences run at once per model")
    model_metadata_endpoints: bool = Field(
        True,
        description="serve Triton's model configuration and repository index endpoints; off, the server "
        "looks to a client like OpenVINO Model Server",
    )
    protocols: set[Literal["oip", "bmw"]] = Field(
        {"oip", "bmw"}, description="which protocols to answer: the Open Inference Protocol, BMW's, or both"
    )
