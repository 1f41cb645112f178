"""What the registry knows of a server: its protocol, models, task and labels (frozen records the
pipelines share), and the shape of `url_configuration.json` that keeps them (pydantic)."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anonymization_api.errors import InvalidRequest
from anonymization_api.schemas import ModelDescription, ServerDescription
from anonymizer_shared.wire import Task

TASKS = {task.value for task in Task}


class Protocol(StrEnum):
    OIP = "oip"  # Open Inference Protocol: our servers, Triton, OpenVINO Model Server, KServe
    BMW = "bmw"  # BMW's inference APIs


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: Task
    labels: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ServerInfo:
    url: str
    protocol: Protocol | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    available: bool = False
    error: str | None = None
    # Task and labels the user gave at registration, for models whose server does not say them.
    given: dict[str, ModelInfo] = field(default_factory=dict)
    # The URL policy refuses its address now (its name resolves elsewhere): no request goes there.
    refused: bool = False
    # This process discovered the server and found what this entry says. An entry read from the file
    # or the shared registry is only a claim (anyone who can write Redis can write one): no image goes
    # to a server before this process has checked its address against the policy and discovered it.
    discovered: bool = False

    def describe(self) -> ServerDescription:
        return ServerDescription(
            url=self.url,
            protocol=self.protocol.value if self.protocol else None,
            available=self.available,
            error=self.error,
            models={name: ModelDescription(task=m.task, labels=list(m.labels)) for name, m in self.models.items()},
        )


# --- url_configuration.json ----------------------------------------------------------------------


class ModelRecord(BaseModel):
    task: Task
    labels: list[str] = Field(min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def info(self, name: str) -> ModelInfo:
        return ModelInfo(name, self.task, tuple(self.labels), self.defaults, self.presets)

    @classmethod
    def of(cls, model: ModelInfo) -> "ModelRecord":
        return cls(task=model.task, labels=list(model.labels), defaults=model.defaults, presets=model.presets)


class ServerRecord(BaseModel):
    """What discovery found of one server, so that it still validates configurations while down."""

    protocol: Protocol | None = None
    given: dict[str, ModelRecord] = Field(default_factory=dict)
    models: dict[str, ModelRecord] = Field(default_factory=dict)

    def info(self, url: str) -> ServerInfo:
        return ServerInfo(
            url,
            self.protocol,
            {name: record.info(name) for name, record in self.models.items()},
            available=False,
            error="not checked yet",
            given={name: record.info(name) for name, record in self.given.items()},
        )

    @classmethod
    def of(cls, server: ServerInfo) -> "ServerRecord":
        return cls(
            protocol=server.protocol,
            given={name: ModelRecord.of(model) for name, model in server.given.items()},
            models={name: ModelRecord.of(model) for name, model in server.models.items()},
        )


class UrlConfiguration(BaseModel):
    """BMW's `{"urls": [...]}`, plus what discovery found of each server under `servers`."""

    model_config = ConfigDict(extra="ignore")

    urls: list[str] = Field(default_factory=list)
    servers: dict[str, Any] = Field(default_factory=dict)  # checked per server: see `record`

    def record(self, url: str, raw_url: str) -> ServerRecord:
        """The saved record of a server; an empty one where it is missing or malformed (discovery
        fills it in again)."""
        content = self.servers.get(url) or self.servers.get(raw_url) or {}
        try:
            return ServerRecord.model_validate(content)
        except ValidationError:
            return ServerRecord()


def parse_given(content: Any) -> dict[str, ModelInfo]:
    """`{"model": {"task": "detection", "labels": [...]}, ...}` as given at registration."""
    if not isinstance(content, dict):
        raise InvalidRequest('models must be a JSON object: {"model": {"task": "detection", "labels": ["face"]}}')
    given = {}
    for name, spec in content.items():
        task = spec.get("task") if isinstance(spec, dict) else None
        task = task if isinstance(task, str) else None
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if task not in TASKS or not isinstance(labels, list) or not labels:
            raise InvalidRequest(
                f"models.{name} needs task (detection or segmentation) and labels (a non-empty list), got {spec!r}"
            )
        given[str(name)] = ModelInfo(str(name), Task(task), tuple(str(label) for label in labels))
    return given
