"""The anonymisation API's settings; every field can be set as ANONYMIZER_API_<FIELD>."""

import os
from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from anonymizer_shared.files import PROJECT_ROOT


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANONYMIZER_API_", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(4343, ge=0, le=65535)
    data_dir: Path = Field(
        PROJECT_ROOT, description="holds jsonFiles/url_configuration.json, anonymized_videos/ and jobs/"
    )
    inference_timeout_s: float = Field(60.0, gt=0, description="time allowed for one inference call")
    shared_memory: bool = Field(
        True, description="send images to inference servers on loopback through shared memory, not the body"
    )
    discovery_timeout_s: float = Field(5.0, gt=0, description="time allowed for each discovery request")
    rediscover_interval_s: float = Field(10.0, gt=0, description="how often unavailable servers are tried again")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    jpeg_quality: int = Field(95, ge=1, le=100, description="default quality of JPEG and WebP output")
    max_video_bytes: int = Field(8 * 1024**3, ge=1, description="largest video upload")
    video_workers: int = Field(1, ge=1, description="video jobs run at once")
    video_queue: int = Field(16, ge=0, description="video jobs that may wait; beyond it: 429")
    video_batch_size: int = Field(8, ge=1, le=64, description="frames per inference call")
    # superfast at CRF 23 gives files the size veryfast gives at CRF 20, 0.9 dB lower in PSNR, at half
    # the encoding time (1080p, measured): encoding is the largest cost per frame after detection.
    video_preset: str = Field("superfast", description="x264 preset of the output: ultrafast .. veryslow")
    video_crf: int = Field(23, ge=0, le=51, description="x264 quality of the output: lower is better and larger")
    video_segment_seconds: float = Field(
        120.0,
        ge=0,
        description="videos longer than 1.5 times this are cut at keyframes into segments of about this length, "
        "anonymised side by side by the workers; 0: never cut",
    )
    broker_url: str | None = Field(
        None,
        validation_alias="ANONYMIZER_BROKER_URL",
        description="redis://host:port/db: jobs run on Celery workers, records and the registry live in Redis",
    )
    celery_queue: str = Field("anonymizer-videos", description="the Celery queue this API sends video jobs to")
    broker_visibility_timeout_s: int = Field(
        3600, ge=1, description="a task not finished within this is given to another worker (its worker is lost)"
    )
    video_encoder_threads: int = Field(
        0, ge=0, le=64, description="x264 threads per video; 0: half the CPUs, at least 1 (detection needs the rest)"
    )

    @property
    def encoder_threads(self) -> int:
        # x264's own default (1.5 threads per CPU) starves the detector sharing the CPUs: on 2 cores
        # one thread gave 4.1 fps at 1080p where the default gave 3.1-3.7, in alternating runs.
        return self.video_encoder_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def url_configuration(self) -> Path:
        return self.data_dir / "jsonFiles" / "url_configuration.json"

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "anonymized_videos"

    @property
    def uploads_dir(self) -> Path:
        """Videos waiting for or in a job; each is removed when its job ends."""
        return self.data_dir / ".uploads"

    @property
    def jobs_db(self) -> Path:
        """The embedded mode's job records (SQLite)."""
        return self.data_dir / "jobs" / "jobs.sqlite3"


@cache
def get_settings() -> ApiSettings:
    return ApiSettings()
