# syntax=docker/dockerfile:1
# The anonymisation API (`anonymizer serve-api`) on port 4343.
# Build from the project root: docker build -f docker/api.Dockerfile -t anonymizer-api .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project and its dependencies (all binary wheels) in a virtual environment
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
# The sources of every package are small; the "api" extra decides which dependencies come in.
RUN /opt/venv/bin/pip install --no-cache-dir ".[api]"

# --- runtime: the virtual environment alone, no sources, no build cache
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ANONYMIZER_API_HOST=0.0.0.0 \
    ANONYMIZER_API_PORT=4343 \
    ANONYMIZER_API_DATA_DIR=/data \
    ANONYMIZER_URL_SEED=/etc/anonymizer/url_configuration.seed.json
# BMW's folders: the registry at /jsonFiles and the videos at /main/anonymized_videos (BMW's
# `-v $(pwd)/jsonFiles:/jsonFiles -v $(pwd)/src/main:/main`), reached from the data folder by links;
# uploads and job records stay under /data. The entrypoint starts as root only to run the service
# as the owner of a bind-mounted jsonFiles (or as 10001), and drops root before anything else runs.
RUN groupadd --gid 10001 anonymizer \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin anonymizer \
 && mkdir -p /jsonFiles /main/anonymized_videos /data/jobs /data/.uploads \
 && ln -s /jsonFiles /data/jsonFiles \
 && ln -s /main/anonymized_videos /data/anonymized_videos \
 && chown -R 10001:10001 /jsonFiles /main /data
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/bin/anonymizer-healthcheck
COPY docker/api-entrypoint.sh /usr/local/bin/anonymizer-api-entrypoint
WORKDIR /data
EXPOSE 4343
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/anonymizer-healthcheck", "http://127.0.0.1:${ANONYMIZER_API_PORT}/health"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/anonymizer-api-entrypoint"]
CMD ["anonymizer", "serve-api"]
