# image-classifier predictor: KServe custom predictor (`python -m predictor serve`).
#
#   docker build -t image-classifier:dev .                                  # model mounted at /mnt/models
#   docker build --build-arg BAKE_MODEL=microsoft/resnet-50 -t ic:resnet .  # model baked into /mnt/models
#   docker run --rm -p 8080:8080 -v "$PWD/models/efficientnet-lite0:/mnt/models:ro" image-classifier:dev
#   make image-check                                                        # build, run as the chart does, classify
#
# Base and CUDA, chosen together: torch 2.14.1 from PyPI is the CUDA 13.0 build and its wheels carry
# every CUDA library it uses (nvidia-cublas, -cudnn-cu13, ... in the venv), so a CUDA base image would
# add ~3 GB of libraries nobody loads and say the wrong CUDA version. The base is plain Debian 12
# (Python 3.11 from Debian, the same minor version as `make test`). What the node must provide: the
# NVIDIA driver, version >= 580 (the first driver for CUDA 13.0), and the NVIDIA container toolkit or
# device plugin that mounts it. On an older driver torch reports no usable GPU.
#
# BASE_IMAGE: a Debian 12 (bookworm) image. The default is the official one, pinned by digest (recorded
# from a public repository; NOT verified against the registry from the offline build machine; check with
# `docker buildx imagetools inspect debian:bookworm-slim` before a release). An offline machine builds
# its own with debootstrap and passes it: scripts/image_check.sh --help, docs/operations.md.
#
# Layers: the locked dependencies (uv.lock, hashes required) are one layer that changes only with the lock;
# the package source is its own small layer, so a source change rebuilds and pushes megabytes, not GB.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac191da862dbe966961bc11990cf5791a8d

# ------------------------------------------------------------------------------------------------ deps
# checkov:skip=CKV_DOCKER_7: every stage starts from BASE_IMAGE, whose default above is pinned by digest (tested)
FROM ${BASE_IMAGE} AS deps

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The serving image's share of the lock: the runtime dependencies, the `gpu` extra and the `canary` extra
# (the chart's canary Job runs this image); no dev tools, no planner. `uv export` turns uv.lock into a pip requirements file with hashes; pip installs it
# with --require-hashes and --no-deps, so nothing outside the lock can enter.
COPY pyproject.toml uv.lock ./
RUN python -m pip install -q 'uv==0.13.9' \
    && uv export -q --frozen --no-emit-project --extra gpu --extra canary --format requirements-txt -o requirements.txt \
    && python -m pip install -q --require-hashes --no-deps -r requirements.txt \
    && python -m pip uninstall -q -y uv \
    && python -m pip check

# ------------------------------------------------------------------------------------------------ model
# Optional: bake a Hugging Face model into /mnt/models (KServe's storage initializer is then not needed;
# deploy with `model.storageUri=""`). Empty = the directory stays empty for a mount or STORAGE_URI.
FROM deps AS model
ARG BAKE_MODEL=""
COPY models/__init__.py models/fetch_hf.py models/
RUN mkdir -p /mnt/models \
    && if [ -n "$BAKE_MODEL" ]; then python -m models.fetch_hf "$BAKE_MODEL" --out /mnt/models; fi

# ---------------------------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime

ENV DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
    && mkdir -p /var/cache/classifier /mnt/models \
    && chown 10001:10001 /var/cache/classifier

# Layer 1 (GB, changes with uv.lock only): the locked dependencies. Owned by root, read-only for the app.
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /mnt/models /mnt/models
# Layer 2 (MB, changes with every release): the serving package, and the canary analysis with the Kubernetes
# object checks it uses (the chart's canary Job runs them from this image); never the planner.
COPY predictor/ /opt/app/predictor/
COPY classifier_canary/ /opt/app/classifier_canary/
COPY classifier_kube/ /opt/app/classifier_kube/

# HOME is /tmp: writable under a read-only root (the chart mounts an emptyDir there; plain docker run
# gets a writable layer or --tmpfs /tmp), so libraries that keep files in HOME (onnxruntime's telemetry
# id) neither fail nor print non-JSON lines.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/var/cache/classifier/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_OFFLINE=1

# Numeric user so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# For plain `docker run`; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]

ENTRYPOINT ["python", "-m", "predictor", "serve"]
