"""The `anonymizer` command: fetch models, run each service or the whole stack, and the tools."""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from anonymizer_shared.logs import LOG_FORMATS, configure_logging

# Each image installs one extra (api, inference), and each runs this command: so nothing beyond the
# standard library and anonymizer_shared is imported here, only inside the command that needs it.


class InvalidSettings(Exception):
    """Settings from the environment or the command line that do not validate; said without a traceback."""


def _settings(kind, **overrides):
    """`kind` (a settings class) from the environment, with the command line's overrides; every
    problem named, never the value (a URL may carry a password)."""
    from pydantic import ValidationError

    try:
        return kind(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        prefix = kind.model_config.get("env_prefix", "")

        def variable(loc: tuple) -> str:
            name = ".".join(map(str, loc)).upper()
            return name if name.startswith("ANONYMIZER_") else prefix + name

        problems = [f"{variable(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise InvalidSettings("; ".join(problems)) from None


def _models_fetch(args: argparse.Namespace) -> int:
    from inference_common.errors import ModelFetchError
    from inference_common.models import CATALOGUE, default_models_dir, fetch_models, yolo_paths
    from inference_common.quantisation import QUANTISED, quantise

    args.models_dir = args.models_dir or default_models_dir()
    try:
        paths = fetch_models(args.models_dir)
        int8 = [] if args.no_int8 else [quantise(network, args.models_dir) for network in QUANTISED]
    except ModelFetchError as exc:
        logging.getLogger("anonymizer").error("%s", exc)
        return 1
    for model, path in zip(CATALOGUE, paths, strict=True):
        sys.stdout.write(f"{model.key:<12} {model.licence:<11} {path}\n")
    network = yolo_paths(args.models_dir)[2]
    if network.exists():  # built from the Darknet files above
        sys.stdout.write(f"{'yolov4_tiny':<12} {'ONNX':<11} {network}\n")
    for path in int8:
        sys.stdout.write(f"{path.parent.name:<12} {'INT8':<11} {path}\n")
    return 0


def _serve(args: argparse.Namespace, kind: str, default_port: int) -> int:
    import uvicorn

    from inference_common.settings import ServerSettings

    settings = _settings(ServerSettings, host=args.host, port=args.port, models_dir=args.models_dir)
    if "port" not in settings.model_fields_set:  # neither the flag nor the environment named one
        settings = settings.model_copy(update={"port": default_port})
    if kind == "detection":
        from inference_detection.server import create_detection_app as create
    else:
        from inference_segmentation.server import create_segmentation_app as create
    uvicorn.run(create(settings), host=settings.host, port=settings.port, **_uvicorn_logging(args))
    return 0


def _serve_api(args: argparse.Namespace) -> int:
    import uvicorn

    from anonymization_api.auth import InvalidKeys
    from anonymization_api.main import create_app
    from anonymization_api.settings import ApiSettings

    settings = _settings(ApiSettings, host=args.host, port=args.port, data_dir=args.data_dir)
    try:
        app = create_app(settings)
    except InvalidKeys as exc:
        logging.getLogger("anonymizer").error("%s", exc)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, **_uvicorn_logging(args))
    return 0


def _uvicorn_logging(args: argparse.Namespace) -> dict:
    # uvicorn's own records go to the handler main() set up, in its format; its access log is off
    # because the services write one access line per request themselves, with the request id.
    return {"log_level": args.log_level, "log_config": None, "access_log": False}


def _worker_name(args: argparse.Namespace) -> str:
    import socket

    return args.name or f"anonymizer@{socket.gethostname()}"


def _worker(args: argparse.Namespace) -> int:
    from anonymization_api.settings import ApiSettings

    settings = _settings(
        ApiSettings, data_dir=args.data_dir, broker_url=args.broker, worker_metrics_port=args.metrics_port
    )
    if not settings.broker_url:
        logging.getLogger("anonymizer").error("no broker: set ANONYMIZER_BROKER_URL=redis://host:port/0 or --broker")
        return 2
    if settings.worker_metrics_port and not args.ping:
        # Before prometheus_client is first imported: the pool's processes then count into files
        # here, which this process serves summed.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="anonymizer-worker-metrics-")
    from anonymization_api.jobs.celery_mode import create_celery, serve_pool_metrics

    app = create_celery(settings)
    if args.ping:  # a health check: does this machine's worker answer?
        return 0 if app.control.ping(destination=[_worker_name(args)], timeout=args.ping_timeout_s) else 1
    if settings.worker_metrics_port:
        serve_pool_metrics(settings.host, settings.worker_metrics_port)
    queues = args.queues or settings.celery_queue
    app.worker_main(
        [
            "worker",
            f"--concurrency={args.concurrency}",
            f"--queues={queues}",
            f"--hostname={_worker_name(args)}",
            f"--loglevel={args.log_level.upper()}",
        ]
    )
    return 0


def _up(args: argparse.Namespace) -> int:
    from anonymizer_tools.stack import run_stack, stack_children

    children, register = stack_children(
        args.api_port, args.detection_port, args.segmentation_port, args.data_dir, args.models_dir
    )
    return run_stack(children, args.log_level, on_ready=register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anonymizer", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        default=os.environ.get("ANONYMIZER_LOG_FORMAT", "json"),
        choices=LOG_FORMATS,
        help="json: one object per line with the request id (default: $ANONYMIZER_LOG_FORMAT or json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="manage the bundled model files")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    fetch = models_commands.add_parser("fetch", help="download, verify and extract the pinned model files")
    fetch.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where to put them (default: $ANONYMIZER_MODELS_DIR or models/ in the project)",
    )
    fetch.add_argument(
        "--no-int8",
        action="store_true",
        help="do not make the INT8 networks (NNCF quantisation of CenterFace and YOLOv4-tiny, about a minute)",
    )
    fetch.set_defaults(handler=_models_fetch)

    for kind, port in (("detection", 8081), ("segmentation", 8090)):
        serve = commands.add_parser(f"serve-{kind}", help=f"run the {kind} inference server")
        serve.add_argument("--host", default=None, help="default: $ANONYMIZER_INFERENCE_HOST or 127.0.0.1")
        serve.add_argument("--port", type=int, default=None, help=f"default: $ANONYMIZER_INFERENCE_PORT or {port}")
        serve.add_argument("--models-dir", type=Path, default=None, help="default: $ANONYMIZER_MODELS_DIR or models/")
        serve.set_defaults(handler=lambda args, kind=kind, port=port: _serve(args, kind, port))
    api = commands.add_parser("serve-api", help="run the anonymisation API")
    api.add_argument("--host", default=None, help="default: $ANONYMIZER_API_HOST or 127.0.0.1")
    api.add_argument("--port", type=int, default=None, help="default: $ANONYMIZER_API_PORT or 4343")
    api.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="holds jsonFiles/url_configuration.json, anonymized_videos/ and jobs/ (default: the project)",
    )
    api.set_defaults(handler=_serve_api)

    worker = commands.add_parser(
        "worker",
        help="run a Celery worker for video jobs: any number, on any machine that reaches the broker, the "
        "inference servers and the data folder",
    )
    worker.add_argument("--broker", default=None, help="redis://host:port/db (default: $ANONYMIZER_BROKER_URL)")
    worker.add_argument(
        "--data-dir", type=Path, default=None, help="the storage the API writes uploads and results to, mounted here"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="jobs or segments at once (processes); default 1")
    worker.add_argument("--queues", default=None, help="comma-separated (default: $ANONYMIZER_API_CELERY_QUEUE)")
    worker.add_argument("--name", default=None, help="the worker's node name (default: anonymizer@<hostname>)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics here (default: $ANONYMIZER_API_WORKER_METRICS_PORT, 0 off)",
    )
    worker.add_argument("--ping", action="store_true", help="health check: exit 0 if this worker answers, else 1")
    worker.add_argument("--ping-timeout-s", type=float, default=5.0)
    worker.set_defaults(handler=_worker)

    from anonymizer_tools import batch, datasets, evaluation, triton_repo

    batch.add_command(commands)
    datasets.add_command(commands)
    evaluation.add_command(commands)
    triton_repo.add_command(commands)

    up = commands.add_parser("up", help="start the whole stack on loopback; Ctrl-C stops it")
    up.add_argument("--api-port", type=int, default=4343)
    up.add_argument("--data-dir", type=Path, default=None, help="the API's data folder (default: the project)")
    up.add_argument("--detection-port", type=int, default=8081)
    up.add_argument("--segmentation-port", type=int, default=8090)
    up.add_argument("--models-dir", type=Path, default=None, help="default: $ANONYMIZER_MODELS_DIR or models/")
    up.set_defaults(handler=_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_format not in LOG_FORMATS:  # argparse checks the choices of given values, not of defaults
        parser.error(f"ANONYMIZER_LOG_FORMAT '{args.log_format}' is not one of {', '.join(LOG_FORMATS)}")
    configure_logging(args.log_level, args.log_format)
    os.environ["ANONYMIZER_LOG_FORMAT"] = args.log_format  # the services `up` starts log the same way
    try:
        return args.handler(args)
    except InvalidSettings as exc:
        logging.getLogger("anonymizer").error("invalid settings: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
