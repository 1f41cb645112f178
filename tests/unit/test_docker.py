"""The Docker set-up (docker/, docker-compose.yml, .dockerignore), checked without a Docker engine.

No image is built or run by these tests: the machines they run on have no Docker engine. What they
check instead:
- docker-compose.yml validates against the Compose Specification's JSON schema, vendored byte for byte
  as tests/data/compose-spec.json from `compose/config/compose_spec.json` in the `docker-compose==1.29.2`
  wheel on PyPI (Docker Inc., Apache-2.0; sha256 pinned below). It is the 2021 revision of the schema,
  so the compose file keeps to keys that revision knows, which every later Compose also accepts.
- every build context, Dockerfile, compose config file and COPY source exists, no COPY source is
  excluded by .dockerignore, and every Dockerfile that installs the project copies all its packages;
- every image ends as a non-root USER with a HEALTHCHECK and EXPOSE; every service has a healthcheck
  on a port it exposes (a worker, which listens on none, answers `anonymizer worker --ping`); each
  profile is self-contained (depends_on stays inside it); the GPU service reserves an NVIDIA GPU; the
  API mounts jsonFiles and anonymized_videos as volume folders; the scale profile's workers mount the
  storage the APIs write and reach the broker the APIs can be pointed at;
- the registry seeds name services of the API's own profile on ports they expose;
- every `anonymizer ...` command line in the Dockerfiles and compose parses with the real CLI parser;
- the health-check script and the API's entrypoint work (run here against a loopback server and in a
  temporary folder).
"""

import argparse
import copy
import hashlib
import importlib.util
import itertools
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from anonymizer_tools.cli import build_parser
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
# The default stack (services of no profile: `docker compose up`) is the CPU one; `gpu` is a whole
# stack of its own, started as `docker compose --profile gpu up api-gpu`; `scale` adds Redis and
# workers to either.
DEFAULT = "default"
PROFILES = {"gpu", "scale"}
API_PORT = 4343
ROOT_USERS = {"root", "0"}
RUN_FLAGS = re.compile(r"^(?:--\S+\s+)*")  # RUN --mount=... --network=... before the command


# --- reading Dockerfiles -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "COPY"
    arguments: str  # the rest, continuation lines joined
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, with `\\` continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # Docker also drops comments inside continuations
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = ""
    assert not pending, f"{path.name}: the file ends inside a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def split_flags(arguments: str) -> tuple[dict[str, str], list[str]]:
    """`--from=build a b` -> ({"from": "build"}, ["a", "b"]); exec form (a JSON list) too."""
    flags: dict[str, str] = {}
    words = shlex.split(arguments)
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    rest = " ".join(words)
    return flags, json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def exec_form(arguments: str) -> list[str]:
    """A CMD, ENTRYPOINT or HEALTHCHECK CMD in exec form; shell form is split like a shell would."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line: `a x && b y; c` -> [[a, x], [b, y], [c]]."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


# --- .dockerignore -----------------------------------------------------------------------------


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore globs: `**` any number of folders, `*` and `?` inside one name."""
    assert "[" not in pattern, f".dockerignore pattern {pattern!r}: character classes are not handled here"
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def dockerignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception `!...`, pattern) in file order; the last rule that matches decides."""
    ignore = context / ".dockerignore"
    rules = []
    for raw in ignore.read_text().splitlines() if ignore.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip().lstrip("/"))
        rules.append((exception, _glob_to_regex(pattern)))
    return rules


def is_excluded(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether .dockerignore keeps `relative` (a path inside the context) out of the build context.

    Like Docker, a rule that matches a parent folder matches everything inside it."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not exception
    return excluded


# --- the compose file and what it points at ----------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@dataclass(frozen=True)
class Image:
    """A Dockerfile as a compose service builds it."""

    context: Path
    dockerfile: Path
    instructions: list[Instruction]

    @property
    def final(self) -> list[Instruction]:
        return stages(self.instructions)[-1]

    def name(self) -> str:
        return str(self.dockerfile.relative_to(ROOT))


def images() -> dict[str, Image]:
    """Compose service -> the image it builds."""
    result = {}
    for name, service in load_compose()["services"].items():
        build = service.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = (ROOT / build.get("context", ".")).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        result[name] = Image(context, dockerfile, parse_dockerfile(dockerfile) if dockerfile.is_file() else [])
    return result


def dockerfiles() -> list[Path]:
    return sorted((ROOT / "docker").glob("*Dockerfile"))


def service_profiles(service: dict) -> set[str]:
    return set(service.get("profiles", [])) or {DEFAULT}


def stack(services: dict, entry: str) -> dict[str, dict]:
    """What `docker compose up ENTRY` starts: the service and what it depends on, transitively."""
    found, todo = {}, [entry]
    while todo:
        name = todo.pop()
        if name not in found:
            found[name] = services[name]
            depends = services[name].get("depends_on", {})
            todo += list(depends if isinstance(depends, list) else depends.keys())
    return found


def healthcheck_words(service: dict) -> list[str]:
    """The health check's command line, a shell's leading VAR=value assignments left out."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str) or test[0] == "CMD-SHELL":
        words = shlex.split(test if isinstance(test, str) else test[1])
        return list(itertools.dropwhile(lambda word: re.fullmatch(r"[A-Z_]+=.*", word), words))
    return test[1:]


def healthcheck_url(service: dict) -> str:
    urls = [word for word in healthcheck_words(service) if word.startswith("http")]
    assert len(urls) == 1, f"healthcheck {service['healthcheck']['test']} should name one URL"
    return urls[0]


def healthcheck_port(service: dict) -> int | None:
    """The port a health check probes: its URL's, or redis-cli's -p; None for a worker's ping."""
    words = healthcheck_words(service)
    if Path(words[0]).name == "redis-cli":
        return int(words[words.index("-p") + 1])
    if Path(words[0]).name == "anonymizer":
        assert words[1:] == ["worker", "--ping"], words
        return None
    return urlsplit(healthcheck_url(service)).port


def listens_on(service: dict) -> set[int]:
    """The container ports a service exposes or publishes."""
    ports = {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    for port in service.get("ports", []):
        target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1].split("/")[0]
        ports.add(int(target))
    return ports


# --- the compose file --------------------------------------------------------------------------


def test_vendored_schema_is_the_pinned_file():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256


def schema_errors(compose: dict) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The file names draft 2019-09 by an http:// URL that jsonschema does not know; say it directly.
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose)]


def test_compose_file_follows_the_compose_specification():
    assert schema_errors(load_compose()) == []


def test_schema_check_catches_mistakes():
    """The vendored schema really constrains: an unknown key and a wrong type are both reported."""
    compose = copy.deepcopy(load_compose())
    compose["services"]["api"]["bogus"] = True
    compose["services"]["api"]["ports"] = "4343:4343"
    errors = schema_errors(compose)
    assert any("bogus" in error for error in errors), errors
    assert any("ports" in error for error in errors), errors


def test_every_service_is_in_the_default_stack_or_a_known_profile_and_has_a_healthcheck():
    services = load_compose()["services"]
    assert {name for name, s in services.items() if service_profiles(s) == {DEFAULT}} == {
        "api",
        "detection",
        "segmentation",
    }, "a plain `docker compose up` starts the CPU stack, and only it"
    for name, service in services.items():
        assert service_profiles(service) <= PROFILES | {DEFAULT}, f"{name}: unknown profile {service['profiles']}"
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        port = healthcheck_port(service)
        if port is None:
            assert service["command"][:2] == ["anonymizer", "worker"], f"{name}: only a worker pings itself"
        else:
            assert port in listens_on(service), f"{name}: its healthcheck probes {port}, not a port it exposes"


def test_each_stack_has_the_api_on_4343_and_its_inference_servers():
    """The default stack and the GPU one each publish one API on 4343, on the host's loopback unless
    ANONYMIZER_API_PUBLISH says otherwise, and tell the API where it is published (the check that
    asks for keys judges that address, not the container's 0.0.0.0)."""
    services = load_compose()["services"]
    default = {name: s for name, s in services.items() if service_profiles(s) == {DEFAULT}}
    for active in (default, stack(services, "api-gpu")):
        published = [name for name, s in active.items() if s.get("ports")]
        assert len(published) == 1, f"one service should publish {API_PORT}, got {published}"
        api = active[published[0]]
        assert api["environment"]["ANONYMIZER_API_PORT"] == str(API_PORT)
        assert api["ports"] == [f"${{ANONYMIZER_API_PUBLISH:-127.0.0.1}}:{API_PORT}:{API_PORT}"]
        assert api["environment"]["ANONYMIZER_API_PUBLISHED_HOST"] == "${ANONYMIZER_API_PUBLISH:-127.0.0.1}"
        assert api["environment"]["ANONYMIZER_API_ALLOW_ANONYMOUS_REMOTE"].endswith(":-false}")
        assert len(active) > 1, "no inference server"


def test_depends_on_stays_inside_each_profile():
    """A service must never wait for one its profile does not start (Compose refuses that)."""
    services = load_compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on the unknown service {dependency}"
            if service_profiles(services[dependency]) == {DEFAULT}:
                continue  # the default stack always starts
            assert service_profiles(service) <= service_profiles(services[dependency]), (
                f"{name} ({service['profiles']}) depends on {dependency} ({services[dependency]['profiles']})"
            )
            if isinstance(depends, dict):
                assert depends[dependency]["condition"] == "service_healthy"
                assert "healthcheck" in services[dependency]


def test_gpu_service_reserves_an_nvidia_gpu():
    services = load_compose()["services"]
    gpu_servers = [s for s in services.values() if service_profiles(s) == {"gpu"} and "ports" not in s]
    assert gpu_servers
    for service in gpu_servers:
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices


def test_api_keeps_bmws_folders_and_reaches_them_from_its_data_folder():
    """BMW's bind mounts (`./jsonFiles:/jsonFiles`, the videos under /main) hold the registry and the
    results; the image links them into the data folder, and the CPU stack mounts this folder's."""
    compose = load_compose()
    api_image = images()["api"]
    links = [i.arguments for i in api_image.final if i.keyword == "RUN" and "ln -s" in i.arguments]
    assert links and "ln -s /jsonFiles /data/jsonFiles" in links[0]
    assert "ln -s /main/anonymized_videos /data/anonymized_videos" in links[0]
    for name, service in compose["services"].items():
        if "ANONYMIZER_API_PORT" not in service.get("environment", {}):
            continue
        assert service["environment"]["ANONYMIZER_API_DATA_DIR"] == "/data"
        mounts = dict(reversed(volume.split(":")[:2]) for volume in service["volumes"])
        assert "/jsonFiles" in mounts and mounts["/main/anonymized_videos"] == "./anonymized_videos", name
    assert compose["services"]["api"]["volumes"][0] == "./jsonFiles:/jsonFiles"


def test_registry_seeds_name_the_servers_of_their_profile():
    """Each API is seeded with the URLs of the inference servers its profile starts, on their ports."""
    compose = load_compose()
    services = compose["services"]
    seeded = 0
    for name, service in services.items():
        seed_target = service.get("environment", {}).get("ANONYMIZER_URL_SEED")
        if not seed_target:
            continue
        configs = [c for c in service.get("configs", []) if isinstance(c, dict) and c.get("target") == seed_target]
        assert len(configs) == 1, f"{name}: no config is mounted at {seed_target}"
        seed_file = ROOT / compose["configs"][configs[0]["source"]]["file"]
        urls = json.loads(seed_file.read_text())["urls"]
        assert urls, f"{seed_file.name} lists no server"
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname in services, f"{seed_file.name}: {url} is not a compose service"
            server = services[parts.hostname]
            assert service_profiles(service) <= service_profiles(server), f"{url} is not started with {name}"
            assert parts.port in listens_on(server), f"{url}: {parts.hostname} does not expose {parts.port}"
            assert parts.hostname in service.get("depends_on", {}), f"{name} does not wait for {parts.hostname}"
        seeded += 1
    assert seeded == 2  # the CPU stack's API and the GPU one


def test_scale_workers_share_the_apis_storage_and_broker():
    """Workers mount the volumes the APIs save uploads and write results to, and use the Redis of
    their profile, which the APIs are pointed at by ANONYMIZER_BROKER_URL."""
    services = load_compose()["services"]
    workers = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["anonymizer", "worker"]}
    assert workers and all(service_profiles(s) == {"scale"} for s in workers.values())
    apis = [s for s in services.values() if "ANONYMIZER_API_PORT" in s.get("environment", {})]
    for name, service in workers.items():
        broker = urlsplit(service["environment"]["ANONYMIZER_BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname in services, f"{name}: {broker.geturl()}"
        assert broker.port in listens_on(services[broker.hostname]), f"{name}: Redis does not expose {broker.port}"
        assert broker.hostname in service["depends_on"], f"{name} does not wait for {broker.hostname}"
        for api in apis:
            assert "ANONYMIZER_BROKER_URL" in api["environment"], "the API cannot be pointed at the broker"
            shared = {v for v in api["volumes"] if v.split(":")[1].endswith(("/anonymized_videos", "/.uploads"))}
            assert len(shared) == 2 and shared <= set(service["volumes"]), f"{name} does not mount {sorted(shared)}"


def test_every_file_compose_refers_to_exists():
    compose = load_compose()
    for name, config in compose.get("configs", {}).items():
        if "file" in config:
            assert (ROOT / config["file"]).is_file(), f"config {name}: {config['file']} does not exist"
    for name, service in compose["services"].items():
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file} does not exist"
        for config in service.get("configs", []):
            source = config["source"] if isinstance(config, dict) else config
            assert source in compose.get("configs", {}), f"{name}: config {source} is not declared"
    for name, image in images().items():
        assert image.context.is_dir(), f"{name}: build context {image.context} does not exist"
        assert image.dockerfile.is_file(), f"{name}: {image.dockerfile} does not exist"
        assert not is_excluded(str(image.dockerfile.relative_to(image.context)), dockerignore_rules(image.context)), (
            f"{name}: .dockerignore excludes its Dockerfile"
        )


def test_build_context_leaves_out_environments_models_tests_and_history():
    rules = dockerignore_rules(ROOT)
    for kept in ("pyproject.toml", "README.md", "anonymization_api/cli.py", "docker/healthcheck.py"):
        assert not is_excluded(kept, rules), kept
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "models/centerface/centerface.onnx",
        "tests/unit/test_docker.py",
        "anonymized_videos/a.mp4",
        "anonymization_api/__pycache__/cli.cpython-311.pyc",
        "anonymizer.egg-info/PKG-INFO",
    ):
        assert is_excluded(left_out, rules), left_out


def test_every_dockerfile_is_used_by_compose():
    used = {image.dockerfile for image in images().values()}
    assert set(dockerfiles()) == used


# --- the Dockerfiles ---------------------------------------------------------------------------


def built_images() -> list[Image]:
    """Each Dockerfile once, as compose builds it."""
    unique = {image.dockerfile: image for image in images().values()}
    return [unique[path] for path in sorted(unique)]


@pytest.mark.parametrize("image", built_images(), ids=Image.name)
def test_copy_sources_exist_and_are_in_the_context(image: Image):
    rules = dockerignore_rules(image.context)
    stage_names = set()
    for stage in stages(image.instructions):
        words = stage[0].arguments.split()
        if len(words) == 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
        for instruction in stage:
            if instruction.keyword not in {"COPY", "ADD"}:
                continue
            flags, paths = split_flags(instruction.arguments)
            where = f"{image.name()}:{instruction.line}"
            if "from" in flags:
                assert flags["from"] in stage_names, f"{where}: no earlier stage {flags['from']}"
                continue
            for source in paths[:-1]:
                matches = sorted(image.context.glob(source))
                assert matches, f"{where}: {source} does not exist in the context {image.context}"
                for match in matches:
                    relative = str(match.relative_to(image.context))
                    assert not is_excluded(relative, rules), f"{where}: .dockerignore excludes {relative}"
                    if match.is_dir():
                        kept = [
                            p for p in match.rglob("*.py") if not is_excluded(str(p.relative_to(image.context)), rules)
                        ]
                        assert kept or not list(match.rglob("*.py")), f"{where}: every file of {relative} is excluded"


@pytest.mark.parametrize("image", built_images(), ids=Image.name)
def test_images_that_install_the_project_copy_all_of_it(image: Image):
    """pip builds from what was copied: a package missing here is missing from the image."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*").rstrip(".") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    wanted = {"pyproject.toml", pyproject["project"]["readme"], *packages}
    copied = set()
    for instruction in image.instructions:
        if instruction.keyword == "COPY":
            flags, paths = split_flags(instruction.arguments)
            if "from" not in flags:
                copied |= {path.rstrip("/") for path in paths[:-1]}
    if "pyproject.toml" in copied:
        assert wanted <= copied, f"{image.name()} does not copy {sorted(wanted - copied)}"


@pytest.mark.parametrize("image", built_images(), ids=Image.name)
def test_images_run_as_non_root_with_a_healthcheck(image: Image):
    final = image.final
    users = [i.arguments.split(":")[0] for i in final if i.keyword == "USER"]
    if not users:  # root only in an entrypoint that drops it before the command runs (tested below)
        entrypoint = exec_form(next(i.arguments for i in final if i.keyword == "ENTRYPOINT"))
        script = next(c for c in image.instructions if c.keyword == "COPY" and entrypoint[-1] in c.arguments)
        source = ROOT / script.arguments.split()[0]
        assert "exec setpriv --reuid=" in source.read_text(), f"{image.name()}: no USER, so it runs as root"
    else:
        assert users[-1] not in ROOT_USERS, f"{image.name()}: runs as {users[-1]}"
    healthchecks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert healthchecks, f"{image.name()}: no HEALTHCHECK"
    assert healthchecks[-1].upper() != "NONE"
    assert any(i.keyword == "EXPOSE" for i in final), f"{image.name()}: no EXPOSE"
    assert any(i.keyword == "CMD" for i in final), f"{image.name()}: no CMD"
    if any("--mount=" in i.arguments for i in image.instructions):
        assert image.dockerfile.read_text().startswith("# syntax=docker/dockerfile:1"), "RUN --mount needs BuildKit"


# --- `anonymizer` command lines ----------------------------------------------------------------


def anonymizer_command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `anonymizer`) for every `anonymizer ...` in the Dockerfiles and compose."""
    found = []
    for path in dockerfiles():
        for instruction in parse_dockerfile(path):
            where = f"{path.name}:{instruction.line}"
            if instruction.keyword == "RUN":
                script = RUN_FLAGS.sub("", instruction.arguments)
                commands = [json.loads(script)] if script.startswith("[") else shell_commands(script)
            elif instruction.keyword in {"CMD", "ENTRYPOINT"}:
                commands = [exec_form(instruction.arguments)]
            else:
                continue
            found += [(where, command[1:]) for command in commands if Path(command[0]).name == "anonymizer"]
    for name, service in load_compose()["services"].items():
        for where, command in (
            ("", service.get("command")),
            (" healthcheck", service.get("healthcheck", {}).get("test")),
        ):
            if command:
                words = command if isinstance(command, list) else shlex.split(command)
                words = words[1:] if words[0] in ("CMD", "CMD-SHELL") else words
                if Path(words[0]).name == "anonymizer":
                    found.append((f"docker-compose.yml:{name}{where}", words[1:]))
    return found


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices) if actions else set()


def test_the_stack_uses_the_cli():
    used = {argv[0] for _, argv in anonymizer_command_lines()}
    assert {"serve-api", "serve-detection", "serve-segmentation", "models", "triton-repo", "worker"} <= used


@pytest.mark.parametrize(("where", "argv"), anonymizer_command_lines(), ids=lambda value: str(value))
def test_anonymizer_command_lines_parse(where: str, argv: list[str]):
    parser = build_parser()
    assert argv[0] in subcommands(parser), f"{where}: `anonymizer {argv[0]}` is not a command"
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `anonymizer {shlex.join(argv)}` is rejected by the CLI")


# --- the two scripts the images run ------------------------------------------------------------


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_healthcheck", ROOT / "docker" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def status_server() -> Iterator[str]:
    """A loopback server answering GET /<status> with that HTTP status."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(int(self.path.strip("/")))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthcheck_script(status_server, monkeypatch, capsys):
    healthcheck = load_healthcheck()
    host, port = status_server.split(":")
    monkeypatch.setenv("PROBE_PORT", port)
    assert healthcheck.main(["healthcheck.py", f"http://{host}:${{PROBE_PORT}}/200"]) == 0
    assert healthcheck.main(["healthcheck.py", f"http://{status_server}/503"]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert healthcheck.check(f"http://127.0.0.1:{free_port()}/v2/health/ready", timeout_s=2) == 1
    assert "refused" in capsys.readouterr().err.lower()
    assert healthcheck.main(["healthcheck.py"]) == 2


def run_entrypoint(
    data_dir: Path, seed: Path, command: tuple[str, ...] = ("echo started",)
) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "ANONYMIZER_API_DATA_DIR": str(data_dir),
        "ANONYMIZER_URL_SEED": str(seed),
        "BMW_JSONFILES": str(data_dir / "jsonFiles"),
        "BMW_VIDEOS": str(data_dir / "anonymized_videos"),
    }
    script = ["sh", str(ROOT / "docker" / "api-entrypoint.sh"), "sh", "-c", *command]
    return subprocess.run(script, env=env, capture_output=True, text=True, check=True, timeout=30)


SEED = ROOT / "docker" / "url_configuration.cpu.json"


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any user may enter, holding a copy of the seed: run as root, the entrypoint goes on
    as another user (pytest's own folders are root's alone)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        folder.chmod(0o755)
        shutil.copyfile(SEED, folder / "seed.json")
        (folder / "seed.json").chmod(0o644)
        yield folder / "data"


def test_api_entrypoint_seeds_the_registry_once(open_folder):
    seed, registry = open_folder.parent / "seed.json", open_folder / "jsonFiles" / "url_configuration.json"
    assert run_entrypoint(open_folder, seed).stdout == "started\n"
    assert json.loads(registry.read_text()) == json.loads(SEED.read_text())
    registry.write_text('{"urls": ["http://elsewhere:8000/"]}')  # what /set_url left there
    assert run_entrypoint(open_folder, seed).stdout == "started\n"
    assert json.loads(registry.read_text()) == {"urls": ["http://elsewhere:8000/"]}
    assert [p.name for p in registry.parent.iterdir()] == ["url_configuration.json"]


def test_api_entrypoint_seeds_bmws_empty_registry_but_not_one_the_service_emptied(open_folder):
    """This folder's jsonFiles holds BMW's `{"urls": []}`, bind-mounted by compose: the seed goes
    there. Once /remove_all_urls emptied it (the service writes a servers section), it stays empty."""
    seed, registry = open_folder.parent / "seed.json", open_folder / "jsonFiles" / "url_configuration.json"
    registry.parent.mkdir(parents=True)
    registry.write_text((ROOT / "jsonFiles" / "url_configuration.json").read_text())
    run_entrypoint(open_folder, seed)
    assert json.loads(registry.read_text()) == json.loads(SEED.read_text())
    registry.write_text('{"urls": [], "servers": {}}')
    run_entrypoint(open_folder, seed)
    assert json.loads(registry.read_text()) == {"urls": [], "servers": {}}


def test_api_entrypoint_without_a_seed_leaves_the_registry_to_the_api(open_folder):
    assert run_entrypoint(open_folder, open_folder / "missing.json").stdout == "started\n"
    assert not (open_folder / "jsonFiles" / "url_configuration.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the entrypoint's switch of user needs root, as in the container")
def test_api_entrypoint_runs_the_service_as_the_owner_of_bmws_bind_mount(open_folder):
    """Started as root, it runs the command as whoever owns the bind-mounted jsonFiles, hands
    the folders Docker created as root to that user, and leaves other users' folders alone."""
    tmp_path = open_folder
    json_files, videos, elsewhere = tmp_path / "jsonFiles", tmp_path / "anonymized_videos", tmp_path / "jobs"
    json_files.mkdir(parents=True)
    os.chown(json_files, 12345, 12345)
    videos.mkdir()  # as Docker creates a missing host folder of a bind mount: root's
    ran = run_entrypoint(tmp_path, tmp_path / "missing.json", ("id -u; id -g; id -G",))
    assert ran.stdout.split() == ["12345", "12345", "12345"]
    assert (videos.stat().st_uid, elsewhere.stat().st_uid) == (12345, 12345)
    os.chown(json_files, 0, 0)  # not mounted, or root's: the service user
    os.chown(videos, 23456, 23456)  # somebody's own folder: not taken from them
    ran = run_entrypoint(tmp_path, tmp_path / "missing.json", ("id -u",))
    assert ran.stdout.split() == ["10001"] and videos.stat().st_uid == 23456
