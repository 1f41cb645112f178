# syntax=docker/dockerfile:1
# The CPU inference servers (OpenVINO runtime), with the bundled models fetched at build time.
# One image for both: `anonymizer serve-detection` (the default, port 8081) and
# `anonymizer serve-segmentation` (run it with ANONYMIZER_INFERENCE_PORT=8090).
# Build from the project root: docker build -f docker/inference.Dockerfile -t anonymizer-inference-cpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project in a virtual environment, and the pinned model files (sha256-checked)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY anonymizer_shared/ anonymizer_shared/
COPY anonymization_api/ anonymization_api/
COPY inference_common/ inference_common/
COPY inference_detection/ inference_detection/
COPY inference_segmentation/ inference_segmentation/
COPY inference_triton/ inference_triton/
COPY anonymizer_tools/ anonymizer_tools/
# The sources of every package are small; the "inference" extra decides which dependencies come in.
RUN /opt/venv/bin/pip install --no-cache-dir ".[inference]" \
 && /opt/venv/bin/anonymizer models fetch --models-dir /opt/anonymizer/models

# --- runtime: the virtual environment and the models, read-only to the service user
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ANONYMIZER_MODELS_DIR=/opt/anonymizer/models \
    ANONYMIZER_INFERENCE_HOST=0.0.0.0 \
    ANONYMIZER_INFERENCE_PORT=8081
RUN groupadd --gid 10001 anonymizer \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin anonymizer
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/anonymizer/models /opt/anonymizer/models
COPY docker/healthcheck.py /usr/local/bin/anonymizer-healthcheck
USER 10001:10001
WORKDIR /home/anonymizer
EXPOSE 8081 8090
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/anonymizer-healthcheck", "http://127.0.0.1:${ANONYMIZER_INFERENCE_PORT}/v2/health/ready"]
CMD ["anonymizer", "serve-detection"]
