"""How the engines that run the networks handle image sizes (`inference_common.engine`); read where a
network is loaded, in the OIP server and Triton's Python back end alike; every field can be set as
ANONYMIZER_ENGINE_<FIELD>."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANONYMIZER_ENGINE_")

    sizes_per_octave: int = Field(
        16,
        ge=0,
        le=64,
        description="network input sides are padded up to one of this many sizes per octave (16: at most 6.25 % "
        "more pixels per side, multiples of 32 below 1024 px and of 64 up to 2048, so 720p and 1080p frames get "
        "none), so photos of any size reuse a few dozen input shapes; 0 pads to a multiple of 32 only",
    )
    cached_shapes: int = Field(
        64,
        ge=1,
        le=4096,
        description="input shapes whose prepared kernels each network keeps (about 4 MB each for CenterFace "
        "at 1024x704); a shape beyond them is prepared again when it comes back",
    )
    static_shapes: int = Field(
        4,
        ge=0,
        le=64,
        description="input shapes that come back often (a video's frames, a camera's photos) get a network "
        "compiled for that shape alone, in the background, after `static_after` inferences: YOLOv4-tiny in INT8 "
        "runs 608x448 in 17 ms there against 19 on the dynamic network, CenterFace gains 5-10 %; this many "
        "per network are kept (about 12 MB each for CenterFace, 25 for YOLOv4-tiny), the least run dropped; 0: never",
    )
    static_after: int = Field(
        3, ge=1, le=1000, description="inferences on one input shape before it gets a network of its own"
    )
    streams: int = Field(
        2,
        ge=1,
        le=16,
        description="a batch of two or more images (a video's key frames, its windows) is "
        "split over this many streams of the CPU's threads, run at once: on 2 cores, two 1080p frames in 146 "
        "against 168 ms a frame (INT8, AVX2) and 16 windows in 47 against 58 ms (bf16); one image keeps every "
        "thread; 1: batches run whole",
    )
