# syntax=docker/dockerfile:1
# NVIDIA Triton Inference Server with our model repository: Python-backend models wrapping the same
# pipelines as the CPU servers, running ONNX Runtime (CUDA) on the GPU. The models are fetched and the
# repository is written at build time. Needs a GPU and the NVIDIA Container Toolkit to run.
# Build from the project root: docker build -f docker/triton.Dockerfile -t anonymizer-triton .
# Triton's Python backend runs the image's python3 (3.12 in the 25.xx images); the project supports
# 3.11 and 3.12. Change the release with --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:<yy.mm>-py3.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

# --- wheel: our project as one pure-Python wheel, so no sources end up in the Triton image
FROM python:3.12-slim-bookworm AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY anonymizer_shared/ anonymizer_shared/
COPY anonymization_api/ anonymization_api/
COPY inference_common/ inference_common/
COPY inference_detection/ inference_detection/
COPY inference_segmentation/ inference_segmentation/
COPY inference_triton/ inference_triton/
COPY anonymizer_tools/ anonymizer_tools/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime
FROM ${TRITON_IMAGE}
# ONNX Runtime's CUDA 12 build, matching the CUDA 12 / cuDNN 9 of the 25.xx Triton images, for the GPU
# engine: with ANONYMIZER_ENGINE=auto the networks run on ONNX Runtime (TensorRT, CUDA) where it sees a
# GPU and on OpenVINO otherwise; build with --build-arg ONNXRUNTIME_GPU_VERSION= to leave it out.
ARG ONNXRUNTIME_GPU_VERSION=1.23.2
# The image's python3 is the system Python (PEP 668 marks it externally managed); Triton's Python
# backend imports from it, so our packages go there.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    ANONYMIZER_ENGINE=auto \
    ANONYMIZER_MODELS_DIR=/opt/anonymizer/models
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 -m pip install --no-cache-dir "$(ls /wheels/*.whl)[inference]" \
 && if [ -n "${ONNXRUNTIME_GPU_VERSION}" ]; then \
        python3 -m pip install --no-cache-dir "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" "onnx==1.23.2"; \
    fi
# --python-path '': Triton's stub runs this same python3, which has the project installed.
RUN anonymizer models fetch --no-int8 --models-dir /opt/anonymizer/models \
 && anonymizer triton-repo /models-repo --models-dir /opt/anonymizer/models --python-path ''
RUN groupadd --gid 10001 anonymizer \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin anonymizer
COPY docker/healthcheck.py /usr/local/bin/anonymizer-healthcheck
USER 10001:10001
WORKDIR /home/anonymizer
# HTTP (the Open Inference Protocol the API speaks), gRPC, metrics
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "/usr/local/bin/anonymizer-healthcheck", "http://127.0.0.1:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models-repo"]
