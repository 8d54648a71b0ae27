# syntax=docker/dockerfile:1.7
# image-classifier predictor: KServe custom predictor (`python -m predictor serve`) on the CUDA runtime.
#
#   docker build -t image-classifier:dev .                                  # model from STORAGE_URI at run time
#   docker build --build-arg BAKE_MODEL=microsoft/resnet-50 -t ic:resnet .  # model baked into /mnt/models
#
# Base image: nvidia/cuda:12.8.1-runtime-ubuntu22.04 (CUDA 12.8 runtime libraries, Ubuntu 22.04 whose
# jammy-updates ship Python 3.11). torch's wheels bring their own CUDA libraries; the base supplies the
# driver-facing runtime and the NVIDIA container toolkit's environment.
# The digest is the linux/amd64 digest recorded for this tag in public repositories; it was NOT verified
# against the registry from this offline build machine. Before a release, check it with
#   docker buildx imagetools inspect nvidia/cuda:12.8.1-runtime-ubuntu22.04
# and update both FROM lines together.

# ------------------------------------------------------------------------------------------------ build
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd AS builder

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependency layer: pyproject.toml plus an empty package, so editing the source does not reinstall torch.
# The install commands are the Makefile's (`python -m pip install -q --upgrade pip`, then the project from
# pyproject.toml with `python -m pip install -q`), so the pins in pyproject.toml (torch==2.14.1,
# torchvision==0.29.1, kserve==0.21.0, ...) are the only ones.
COPY pyproject.toml ./
RUN mkdir predictor && touch predictor/__init__.py \
    && python -m pip install -q --upgrade pip \
    && python -m pip install -q '.[gpu]'

# Source layer: the same command again; dependencies are already satisfied, only our package changes.
COPY predictor/ predictor/
RUN python -m pip install -q '.[gpu]'

# Optional: bake a Hugging Face model into /mnt/models (KServe's storage initializer is then not needed;
# deploy with `model.storageUri=""`). Empty = the directory stays empty for STORAGE_URI.
ARG BAKE_MODEL=""
COPY models/__init__.py models/fetch_hf.py models/
RUN mkdir -p /mnt/models \
    && if [ -n "$BAKE_MODEL" ]; then python -m models.fetch_hf "$BAKE_MODEL" --out /mnt/models; fi

# ---------------------------------------------------------------------------------------------- runtime
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd AS runtime

ENV DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /var/cache/classifier \
    && chown 10001:10001 /var/cache/classifier

# Owned by root and read-only for the app user: the process cannot modify its own code.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /mnt/models /mnt/models

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/cache/classifier/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

# Numeric user so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# For plain `docker run`; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]

ENTRYPOINT ["python", "-m", "predictor", "serve"]
