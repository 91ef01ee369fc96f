# syntax=docker/dockerfile:1
# The review service image: the riskstream package with its `review` extra (PostgreSQL driver,
# the console's web stack, aiokafka), WITHOUT `train` (no torch), run as a non-root user.
# `docker compose build review`, or
#   docker build -f docker/review.Dockerfile -t riskstream-review .
# Everything is downloaded while the image is built, never when a container runs.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
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
RUN pip install --upgrade pip \
    && pip install ".[review]" \
    && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the review image" >&2; exit 1; fi

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# uid 10001, as in the other images.
RUN groupadd --system --gid 10001 riskstream \
    && useradd --system --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin riskstream
USER 10001:10001
WORKDIR /home/riskstream
EXPOSE 8470
ENTRYPOINT ["riskstream"]
CMD ["review", "--host", "0.0.0.0"]
