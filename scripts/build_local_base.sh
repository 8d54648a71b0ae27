#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) base image on this machine, for builders that reach Debian's mirror and
# PyPI but no container registry: debootstrap a minimal root file system, then `docker import` it.
#
#   bash scripts/build_local_base.sh [TAG]      # default TAG: image-classifier/debian:bookworm
#   docker build --build-arg BASE_IMAGE=image-classifier/debian:bookworm -t image-classifier:dev .
#
# When this network reaches PyPI only through a TLS proxy with its own CA ($PIP_CERT, set here), that CA
# bundle is copied into the base and named by PIP_CERT there, so pip inside the build trusts it. Images
# built on such a base carry that variable: use them for checks, not for release.
set -euo pipefail
tag="${1:-image-classifier/debian:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if ! command -v debootstrap >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi
root="$(mktemp -d /tmp/debian-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
changes=(-c 'CMD ["bash"]')
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  install -D -m 0644 "$PIP_CERT" "$root/etc/ssl/build-host/ca-bundle.crt"
  changes+=(-c 'ENV PIP_CERT=/etc/ssl/build-host/ca-bundle.crt')
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | docker import "${changes[@]}" - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
