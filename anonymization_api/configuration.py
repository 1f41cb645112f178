"""From a user configuration to a plan: every entry validated (schema, then against the registry)
before any inference, every problem reported at once; then the inference calls the plan needs,
one per (server, model) however many entries use it."""

import difflib
import json
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from anonymization_api.errors import AnonymisationError, InvalidConfiguration
from anonymization_api.regions import FACE_CENTRE_SHIFT, RegionStyle
from anonymization_api.registry import ModelInfo, Registry, ServerInfo
from anonymization_api.schemas import SensitiveInfo
from anonymization_api.techniques import TECHNIQUES, TechniqueOptions
from anonymizer_shared.wire import Task

logger = logging.getLogger(__name__)

FACE_MASK_SCALE = 1.5
DEFAULT_MASK_SCALE = 1.15
# The preset a still image gets from a model that offers one, where its entry names none: a photo
# gives one look at each face, where a video shows it on many frames and holds it between them, so a
# photo is worth a wider search than a video frame (docs/privacy.md, "Face presets").
PHOTO_PRESET = "photo"


@dataclass(frozen=True)
class PlannedEntry:
    index: int
    info: SensitiveInfo
    servers: tuple[ServerInfo, ...]  # replicas offering the model, in preference order
    model: ModelInfo
    class_index: int
    style: RegionStyle
    options: TechniqueOptions

    @property
    def call_key(self) -> tuple[str, str, str]:
        """Entries with the same key share one inference call."""
        parameters = json.dumps({"preset": self.info.preset, **self.info.model_parameters}, sort_keys=True)
        return self.servers[0].url, self.model.name, parameters


@dataclass
class Plan:
    entries: list[PlannedEntry]
    # The parameters of each (server, model) call, merged across the entries that share it.
    calls: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # What was ignored (unknown fields): shown to the user, never a reason to fail a BMW file.
    warnings: list[str] = field(default_factory=list)


MAX_CONFIGURATION_BYTES = 1024 * 1024


def parse_configuration(raw: bytes | str, max_entries: int = 64) -> dict[str, Any]:
    """The configuration's JSON object, or a 422 naming what is wrong with it."""
    try:
        content = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidConfiguration(
            [_problem(None, "configuration", None, f"the configuration is not valid JSON ({exc})")]
        ) from exc
    except RecursionError as exc:
        raise InvalidConfiguration(
            [_problem(None, "configuration", None, "the configuration is nested too deeply to be one")]
        ) from exc
    if not isinstance(content, dict) or not isinstance(content.get("sensitive_info"), list):
        raise InvalidConfiguration(
            [_problem(None, "sensitive_info", None, 'the configuration must be {"sensitive_info": [ ... ]}')]
        )
    if not content["sensitive_info"]:
        raise InvalidConfiguration([_problem(None, "sensitive_info", [], "sensitive_info lists nothing to hide")])
    if len(content["sensitive_info"]) > max_entries:
        count = len(content["sensitive_info"])
        message = f"sensitive_info has {count} entries, more than the {max_entries} allowed; combine entries"
        raise InvalidConfiguration([_problem(None, "sensitive_info", count, message)])
    return content


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def plan(
    content: dict[str, Any], registry: Registry, defaults: dict[str, str] | None = None, *, photo: bool = False
) -> Plan:
    """Every entry matched to servers and a model, or a 422 listing every problem; `defaults`
    names the model to use per label where several offer it; `photo`: the entries are for a still
    image, so those naming no preset get their model's PHOTO_PRESET where it has one."""
    defaults = defaults or {}
    problems: list[dict[str, Any]] = []
    entries: list[PlannedEntry] = []
    warnings: list[str] = []
    for index, raw in enumerate(content["sensitive_info"]):
        warnings.extend(_unknown_fields(index, raw))
        try:
            info = SensitiveInfo.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_schema_problems(index, exc))
            partial = _matchable_part(raw, exc)
            if partial is not None:  # still report what the registry says of the fields that are fine
                _resolve(index, partial, registry, problems, [], defaults)
            continue
        entry = _resolve(index, info, registry, problems, warnings, defaults)
        if entry is not None and photo and entry.info.preset is None and PHOTO_PRESET in entry.model.presets:
            entry = replace(entry, info=entry.info.model_copy(update={"preset": PHOTO_PRESET}))
        if entry is not None:
            entries.append(entry)
    if problems:
        raise InvalidConfiguration(problems)
    result = Plan(entries, warnings=warnings)
    for entry in entries:
        parameters = result.calls.setdefault(entry.call_key, dict(entry.info.model_parameters))
        if entry.info.preset is not None:
            parameters["preset"] = entry.info.preset
        _merge_threshold(parameters, entry)
    return result


def _merge_threshold(parameters: dict[str, Any], entry: PlannedEntry) -> None:
    """Ask the model for the lowest threshold any entry wants; each entry filters its own after."""
    wanted = entry.info.score_threshold
    if wanted is None and "score_threshold" in entry.info.model_parameters:
        return  # the entry set the model's threshold itself
    if wanted is None and entry.info.preset is not None:
        wanted = entry.model.presets.get(entry.info.preset, {}).get("score_threshold")
    if wanted is None:
        wanted = entry.model.defaults.get("score_threshold")
    if wanted is None:
        return
    parameters["score_threshold"] = min(wanted, parameters.get("score_threshold", 1.0))


def _problem(index: int | None, field_name: str, value: Any, message: str, choices: list | None = None) -> dict:
    where = f"entry {index}: " if index is not None else ""
    text = where + message + (f"; valid: {choices}" if choices is not None else "")
    return {"entry": index, "field": field_name, "value": _echo(value), "message": text, "choices": choices}


def _echo(value: Any) -> Any:
    """A value sent back in a problem: JSON-safe (no NaN or infinity) and short."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value[:200] if isinstance(value, str) else value
    text = json.dumps(value, default=str)
    return value if len(text) <= 500 and "NaN" not in text and "Infinity" not in text else text[:200]


def _unknown_fields(index: int, raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return []
    known = list(SensitiveInfo.model_fields)
    warnings = []
    for name in raw:
        if name not in SensitiveInfo.model_fields:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(known)}"
            warnings.append(f"entry {index}: unknown field '{str(name)[:64]}' ignored{hint}")
    return warnings


def _schema_problems(index: int, exc: ValidationError) -> list[dict[str, Any]]:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "entry"
        value = error.get("input")
        if error["type"] == "missing":
            message, value, choices = f"'{name}' is required", None, None
        else:
            message, choices = f"{name} {value!r}: {error['msg']}", None
            if name == "inference_type":
                choices = [task.value for task in Task]
        problems.append(_problem(index, name, value, message, choices))
    return problems


MATCHED_FIELDS = ("class_name", "inference_type", "anonymization_technique", "model_name", "url")


def _matchable_part(raw: Any, exc: ValidationError) -> SensitiveInfo | None:
    """The fields of an invalid entry that the registry checks, when those fields themselves are valid."""
    failed = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    if not isinstance(raw, dict) or failed & set(MATCHED_FIELDS):
        return None
    try:
        return SensitiveInfo.model_validate(
            {"anonymization_degree": 1, **{name: raw[name] for name in MATCHED_FIELDS if name in raw}}
        )
    except ValidationError:
        return None


def _listing(names: list[str]) -> str:
    return ("model " if len(names) == 1 else "models ") + ", ".join(f"'{name}'" for name in names)


def _elsewhere(info: SensitiveInfo, registry: Registry) -> str:
    """What else could explain a class no model offers: another inference type that offers it, or
    servers whose models are unknown because discovery got no answer from them."""
    hints = []
    for task in Task:
        names = sorted(
            {
                m.name
                for s in registry.servers()
                for m in s.models.values()
                if m.task is task and info.class_name in m.labels
            }
        )
        if task is not info.inference_type and names:
            hints.append(f"'{info.class_name}' is offered as {task} by {_listing(names)}: set inference_type to {task}")
    silent = [server for server in registry.servers() if not server.models and not server.available]
    for server in silent:
        logger.warning("inference server %s offers no known models: %s", server.url, server.error)
        hints.append(f"the server {server.url} did not answer discovery ({server.error}), so what it offers is unknown")
    return "".join(f"; {hint}" for hint in hints) + "; see GET /available_methods/"


def _resolve(
    index: int,
    info: SensitiveInfo,
    registry: Registry,
    problems: list[dict],
    warnings: list[str],
    defaults: dict[str, str],
) -> PlannedEntry | None:
    """Match an entry to registered servers and a model; records problems and returns None if it can't.
    Where several models offer the class, `defaults` (label -> model) chooses, else the first registered."""
    found = len(problems)
    if info.anonymization_technique not in TECHNIQUES:
        problems.append(
            _problem(
                index,
                "anonymization_technique",
                info.anonymization_technique,
                f"unknown technique '{info.anonymization_technique}'",
                sorted(TECHNIQUES),
            )
        )
    task = info.inference_type
    offering = [
        (server, model)
        for server in registry.servers()
        for model in server.models.values()
        if model.task is task and info.class_name in model.labels
    ]
    if not offering:
        labels = sorted(
            {label for s in registry.servers() for m in s.models.values() if m.task is task for label in m.labels}
        )
        message = f"no registered {task} model offers '{info.class_name}'" + _elsewhere(info, registry)
        problems.append(_problem(index, "class_name", info.class_name, message, labels))
        return None
    if info.url is not None:
        try:
            url = registry.get(info.url).url
        except AnonymisationError:
            url = None
        by_url = [(s, m) for s, m in offering if s.url == url]
        if not by_url:
            urls = sorted({s.url for s, _ in offering})
            problems.append(
                _problem(index, "url", info.url, f"{info.url} offers no {task} model for '{info.class_name}'", urls)
            )
            return None
        offering = by_url
    if info.model_name is not None:
        by_name = [(s, m) for s, m in offering if m.name == info.model_name]
        if not by_name:
            names = sorted({m.name for _, m in offering})
            problems.append(
                _problem(
                    index,
                    "model_name",
                    info.model_name,
                    f"model '{info.model_name}' does not offer '{info.class_name}' as {task} here; "
                    f"{_listing(names)} {'does' if len(names) == 1 else 'do'}: set model_name to "
                    f"{'it' if len(names) == 1 else 'one of them'} or leave model_name out",
                    names,
                )
            )
            return None
        offering = by_name
    names = sorted({m.name for _, m in offering})
    if len(names) > 1:
        chosen = defaults.get(info.class_name)
        if chosen not in names:
            chosen = offering[0][1].name  # the model of the server registered first: an admin's first choice
            warnings.append(
                f"entry {index}: several models offer '{info.class_name}' ({', '.join(names)}); using '{chosen}', "
                "the first registered; name one in model_name, or an administrator sets the default per label "
                "(ANONYMIZER_API_DEFAULT_MODELS)"
            )
        offering = [(s, m) for s, m in offering if m.name == chosen]
    # Servers offering the same model are replicas; available ones first, and the model's
    # defaults and presets are read from one of those: a replica that is down may be stale.
    offering.sort(key=lambda pair: not pair[0].available)
    model = offering[0][1]
    accepted = set(model.defaults) | {"preset"}
    unknown = sorted(set(info.model_parameters) - accepted) if model.defaults else []
    if unknown:
        problems.append(
            _problem(
                index,
                "model_parameters",
                unknown,
                f"model '{model.name}' takes no parameter {', '.join(repr(name) for name in unknown)}",
                sorted(model.defaults),
            )
        )
    if info.preset is not None and info.preset not in model.presets:
        problems.append(
            _problem(
                index,
                "preset",
                info.preset,
                f"model '{model.name}' has no preset '{info.preset}'",
                sorted(model.presets),
            )
        )
    if len(problems) > found:
        return None
    servers = tuple(server for server, _ in offering)
    is_face = info.class_name == "face" and task is Task.DETECTION
    scale = info.mask_scale or (FACE_MASK_SCALE if is_face else DEFAULT_MASK_SCALE)
    style = RegionStyle(
        mask_scale=scale if task is Task.DETECTION else 1.0,
        shape=info.shape,
        feather=info.feather,
        part=info.part(),
        shift_up=FACE_CENTRE_SHIFT if is_face else 0.0,
    )
    options = TechniqueOptions(color=tuple(info.color))
    return PlannedEntry(index, info, servers, model, model.labels.index(info.class_name), style, options)
