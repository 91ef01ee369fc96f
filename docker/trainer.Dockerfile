# syntax=docker/dockerfile:1
# The one-shot trainer image: riskstream with its `train` extra and torch==2.13.0 (the CPU build,
# the same pin as scripts/setup.sh), run as a non-root user. Its entrypoint
# (docker/trainer-entrypoint.sh) simulates or reads data, trains, and exports a verified bundle.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch from PyTorch's CPU wheel index: no multi-GB CUDA build. This download happens at image
# BUILD time only; at run time the trainer downloads nothing (HF_HUB_OFFLINE below).
RUN pip install --upgrade pip \
    && pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY events ./events
COPY simulator ./simulator
COPY training ./training
COPY export ./export
COPY stream ./stream
COPY riskstream ./riskstream
# torch==2.13.0 is already there, so `.[train]` (torch>=2.3) keeps it.
RUN pip install ".[train]" \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MPLBACKEND=Agg
COPY --from=build /opt/venv /opt/venv
# uid 10001, as in worker.Dockerfile: the workers read what this user writes. The folders are
# created here so that empty named volumes mounted on them take this owner.
RUN groupadd --system --gid 10001 riskstream \
    && useradd --system --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin riskstream \
    && mkdir -p /bundles /work /data \
    && chown 10001:10001 /bundles /work /data
COPY docker/trainer-entrypoint.sh /usr/local/bin/riskstream-trainer
RUN chmod 0755 /usr/local/bin/riskstream-trainer
ENV RISKSTREAM_BUNDLE=/bundles/current \
    RISKSTREAM_TRAIN_DATA=/data \
    RISKSTREAM_TRAIN_WORKDIR=/work
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/riskstream-trainer"]
