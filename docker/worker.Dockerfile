# syntax=docker/dockerfile:1
# The stream worker image: the riskstream package WITHOUT the `train` extra (no torch), ONNX
# Runtime for the model, run as a non-root user. `docker compose build worker`, or
#   docker build -f docker/worker.Dockerfile -t riskstream-worker .
# CUDA_DEPS="onnxruntime-gpu[cuda,cudnn]" (the compose file's worker-gpu) adds the CUDA and cuDNN
# libraries as pip wheels, so ONNX Runtime can use a GPU handed in by the NVIDIA runtime.
# Everything is downloaded while the image is built, never when a container runs.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only for dependencies without a wheel for this platform; it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY events ./events
COPY simulator ./simulator
COPY training ./training
COPY export ./export
COPY stream ./stream
COPY riskstream ./riskstream
ARG CUDA_DEPS=""
# Not `.[train]`: the worker side runs on numpy, ONNX Runtime, Faust, Redis and Kafka clients,
# with aiokafka's codec extras (cramjam): producers may compress with gzip, snappy, lz4 or zstd,
# and the build fails where one of them could not be decoded.
# ${CUDA_DEPS} unquoted on purpose (empty: no argument); `set -f` keeps its [...] from globbing.
RUN set -f \
    && pip install --upgrade pip \
    && pip install . ${CUDA_DEPS} \
    && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the worker image" >&2; exit 1; fi \
    && python -c "import sys; from stream.codecs import missing_codecs as m; sys.exit(f'the worker cannot decode {m()}' if m() else 0)"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# CUDA/cuDNN from pip wheels (only with CUDA_DEPS): make them visible to the dynamic loader,
# whatever folder layout the nvidia-* wheels use.
RUN set -eu; \
    libs="$(find /opt/venv/lib -path '*/site-packages/nvidia/*/lib' -type d | sort)"; \
    if [ -n "$libs" ]; then echo "$libs" > /etc/ld.so.conf.d/riskstream-nvidia.conf && ldconfig; fi
# uid 10001, as in trainer.Dockerfile: the trainer writes the bundle (its folder mode 0700),
# the workers read it from the same volume.
RUN groupadd --system --gid 10001 riskstream \
    && useradd --system --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin riskstream \
    && mkdir -p /bundles /etc/riskstream \
    && chown 10001:10001 /bundles
COPY config/rules.yaml /etc/riskstream/rules.yaml
ENV RISKSTREAM_BUNDLE=/bundles/current \
    RISKSTREAM_RULES=/etc/riskstream/rules.yaml \
    RISKSTREAM_METRICS_HOST=0.0.0.0 \
    RISKSTREAM_METRICS_PORT=9464
USER 10001:10001
WORKDIR /home/riskstream
EXPOSE 9464
ENTRYPOINT ["riskstream"]
CMD ["worker"]
