"""The anonymisation API's settings; every field can be set as ANONYMIZER_API_<FIELD>."""

import os
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from anonymization_api.registry.url_policy import AllowList
from anonymizer_shared.files import PROJECT_ROOT
from anonymizer_shared.http import is_loopback_host


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANONYMIZER_API_", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(4343, ge=0, le=65535)
    admin_keys: str = Field("", description="comma-separated API keys (or sha256:<hex> of each) of administrators")
    user_keys: str = Field("", description="comma-separated API keys (or sha256:<hex> of each) of users")
    keys_file: Path | None = Field(None, description="a file of lines 'admin KEY' or 'user KEY' (KEY may be sha256:)")
    published_host: str | None = Field(
        None,
        description="where the API's port is published, where that is not where it listens (a container listens "
        "on 0.0.0.0; compose publishes it on 127.0.0.1 by default): the check that asks for API keys beyond "
        "loopback judges this address",
    )
    allow_anonymous_remote: bool = Field(
        False, description="listen beyond loopback without API keys (only behind a proxy that authenticates)"
    )
    cors_origins: str = Field("", description="comma-separated origins whose pages may call the API; none by default")
    data_dir: Path = Field(
        PROJECT_ROOT, description="holds jsonFiles/url_configuration.json, anonymized_videos/ and jobs/"
    )
    inference_timeout_s: float = Field(60.0, gt=0, description="time allowed for one inference call")
    shared_memory: bool = Field(
        True, description="send images to inference servers on loopback through shared memory, not the body"
    )
    discovery_timeout_s: float = Field(5.0, gt=0, description="time allowed for each discovery request")
    discovery_deadline_s: float = Field(15.0, gt=0, description="time allowed for the whole discovery of one server")
    max_discovery_bytes: int = Field(1024 * 1024, ge=1024, description="largest answer read during discovery")
    max_servers: int = Field(64, ge=1, description="most inference servers the registry holds")
    registry_allow: str = Field(
        "",
        description="comma-separated host names, addresses and networks (CIDR) that /set_url may register; "
        "empty: any address but link-local, multicast, unspecified, broadcast and reserved ones",
    )
    rediscover_interval_s: float = Field(10.0, gt=0, description="how often unavailable servers are tried again")
    max_detections: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="most detections an inference answer may hold per image; a server answering more breaks the "
        "contract (502, marked unavailable). It also bounds the bytes of a detection answer read",
    )
    replica_failures: int = Field(
        3,
        ge=1,
        le=1000,
        description="calls in a row that a replica answers with an error before it is marked unavailable "
        "(its share goes to the other replicas until re-discovery finds it well)",
    )
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1, description="largest image upload")
    # 36 MP holds an 8K frame (33 MP); the decoded image costs 3 bytes a pixel, several times over
    max_image_pixels: int = Field(36_000_000, ge=1, description="largest image, width x height")
    images_at_once: int = Field(4, ge=1, description="images anonymised at once; more wait")
    pixels_at_once: int = Field(
        48_000_000,
        ge=1,
        description="pixels of the images anonymised at once, summed: memory grows with pixels, not bytes (a "
        "100 KB PNG can hold 36 MP); an image waits until its pixels fit, one larger than this runs alone",
    )
    images_waiting: int = Field(16, ge=0, description="images that may wait; beyond it: 503 with Retry-After")
    requests_per_key: int = Field(8, ge=1, description="requests one API key may have in progress; beyond: 429")
    default_models: dict[str, str] = Field(
        default_factory=dict,
        description='label -> model used where several registered models offer the label, e.g. {"face": "centerface"}',
    )
    max_configuration_entries: int = Field(64, ge=1, description="entries of sensitive_info at most")
    max_video_pixels: int = Field(3840 * 2160, ge=1, description="largest video frame, width x height")
    max_video_seconds: float = Field(4 * 3600, gt=0, description="longest video")
    max_video_frames: int = Field(1_000_000, ge=1, description="most frames in a video")
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
    jobs_per_key: int = Field(
        100,
        ge=1,
        description="video jobs one API key (or, without keys, the one local user) may have queued or running",
    )
    worker_lease_s: float = Field(
        15.0,
        ge=2,
        le=600,
        description="a Celery worker renews a lease on the step it runs this often times three; a step whose lease "
        "lapses (its worker was lost) is sent to another worker",
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="a Celery worker serves the Prometheus metrics of its pool's processes (inference calls per "
        "server, model and outcome) on this port, at ANONYMIZER_API_HOST; 0: not served",
    )
    video_encoder_threads: int = Field(
        0, ge=0, le=64, description="x264 threads per video; 0: half the CPUs, at least 1 (detection needs the rest)"
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_needs_credentials(cls, value: str | None) -> str | None:
        """Redis holds the job records, the registry and the queue: whoever writes it steers the
        service. So a Redis beyond this machine must ask for a password."""
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("the broker is Redis: redis://:PASSWORD@host:6379/0 (or rediss:// for TLS)")
        if parts.scheme != "unix" and not parts.password and not is_loopback_host(parts.hostname or ""):
            raise ValueError(
                f"the broker at {parts.hostname} is named without a password, and anyone who reaches that Redis "
                "could rewrite jobs and the registry: start Redis with --requirepass and give it as "
                "redis://:PASSWORD@host:port/db (only a Redis on this machine's loopback may go without)"
            )
        return value

    @field_validator("registry_allow")
    @classmethod
    def _allow_list_parses(cls, value: str) -> str:
        AllowList.parse(value)  # a typo fails at start, not as every registration refused
        return value

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
