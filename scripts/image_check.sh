#!/usr/bin/env bash
# `make image-check`: build the container image and run it exactly as the chart's pod spec runs it
# (scripts/image_check.py says what is checked). Not part of `make test`: ~15 minutes on 2 cores.
#
#   bash scripts/image_check.sh                                   # base image from the Dockerfile
#   BASE_IMAGE=image-classifier/debian:bookworm bash scripts/image_check.sh   # a locally built base
#
# Installs Debian's docker.io when no Docker engine is there, and starts dockerd when none runs.
# Offline (no registry reachable): build a base first with scripts/build_local_base.sh and pass it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q docker.io
fi
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /tmp/image-check-dockerd.log)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo nohup dockerd >/tmp/image-check-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: /tmp/image-check-dockerd.log"; exit 1; }
fi
args=()
[ -n "${BASE_IMAGE:-}" ] && args+=(--base-image "$BASE_IMAGE")
PATH="$PWD/.tools:$PATH" exec .venv/bin/python scripts/image_check.py "${args[@]}" "$@"
