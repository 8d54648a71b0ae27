#!/usr/bin/env bash
# The GPU check in one command, for the lent GPU machine (one H200, 16 cores, no network, python3 = 3.12
# with torch; /work/.library/device/README.md). Finishes in under 8 minutes: each stage runs under its own
# `timeout`, capped by what is left of GPU_SUITE_BUDGET_S, and a failed stage does not stop the next one;
# the exit status is non-zero if any stage failed.
#
# Before the call, here: `bash scripts/gpu_wheels.sh` (re-creates .whl/, ~38 MiB, ignored by git).
# The call (device tool `run`):
#
#   command:   bash bench/gpu_suite.sh
#   carry:     [".whl"]
#   timeout_s: 600
#
# Stages: install the carried wheels into /tmp/site; GPU, driver and library versions; build the default
# model (EfficientNet-Lite0, from the carried efficientnet-lite0 wheel, offline) and a random full
# ResNet-50; `pytest -m gpu tests/gpu` (fp16 keeps the answers, eager and compiled; auto picks cuda;
# a real server on the GPU; ONNX Runtime on CUDA; batch sizes 1..128); the raw probe on CUDA (torch fp16
# and fp32, ONNX Runtime when its CUDA provider exists) at batch sizes 1..128 on ResNet-50; the serving
# benchmark on ResNet-50, our server (device auto = cuda) against the naive baseline, 640x480 JPEGs at
# concurrency 128 (and ours with `jpeg_decode=device`); then /classify with 1 and with 8 images per
# request against one server (printed into suite.log). pytest collects tests/gpu only: the other test folders import packages that machine
# lacks (jsonschema, kubernetes-validate; the chart tests also want helm).
#
# Results under $OUT (set by the device tool; default bench/results/gpu), at most 8 files, flat:
# suite.log (everything printed), summary.txt (stage, status, seconds), pytest_junit.xml,
# raw_probe.json, raw_probe.md, serve_bench.json, serve_bench.md, logs.tgz (server and pytest logs).
#
# Knobs (environment): PY (default python3), GPU_SUITE_BUDGET_S (default 470), GPU_SUITE_CONCURRENCY
# (default 128), GPU_SUITE_DURATION (seconds per serving configuration, default 20), GPU_SUITE_COMPILE=1
# (add torch.compile rows to the raw probe: one compilation per batch size, minutes).
# GPU_SUITE_DRY=1: the same stages with tiny settings on a machine without a GPU (CPU, a tiny random
# ResNet, pytest --collect-only, a pip --dry-run of the wheels for CPython 3.12), to check the plumbing;
# use PY=.venv/bin/python there.
# shellcheck disable=SC2329  # the stage functions run through `stage` (timeout bash -c)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PY=${PY:-python3}
DRY=${GPU_SUITE_DRY:-0}
OUT=${OUT:-bench/results/gpu}
BUDGET=${GPU_SUITE_BUDGET_S:-470}
CONC=${GPU_SUITE_CONCURRENCY:-128}
DURATION=${GPU_SUITE_DURATION:-20}
WORK=$(mktemp -d /tmp/gpu-suite.XXXXXX)
SITE=/tmp/site
DEADLINE=$((SECONDS + BUDGET))
RESERVE=15 # seconds kept back at the end for the summary and the logs archive
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: >"$OUT/summary.txt"
FAILED=0

# stage NAME LIMIT_S CMD...: run CMD under `timeout`, limited to what is left of the budget.
stage() {
  local name=$1 limit=$2 rc t0
  shift 2
  local left=$((DEADLINE - SECONDS - RESERVE))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then
    echo "== $name: skipped, budget spent"
    printf '%-12s %-22s %4ss\n' "$name" "skipped (budget)" 0 >>"$OUT/summary.txt"
    FAILED=1
    return
  fi
  echo "== $name (limit ${limit}s)"
  t0=$SECONDS
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" # a new process group: a timeout ends its servers too
  rc=$?
  local status="ok"
  if ((rc == 124 || rc == 137)); then
    status="TIMEOUT after ${limit}s"
  elif ((rc != 0)); then
    status="FAILED rc=$rc"
  fi
  [ "$status" = ok ] || FAILED=1
  echo "== $name: $status in $((SECONDS - t0))s"
  printf '%-12s %-22s %4ss\n' "$name" "$status" "$((SECONDS - t0))" >>"$OUT/summary.txt"
}

install_wheels() {
  local wheels=(.whl/*.whl)
  [ -e "${wheels[0]}" ] || { echo "no wheels in .whl/: run scripts/gpu_wheels.sh and carry .whl" >&2; return 1; }
  echo "${#wheels[@]} wheels"
  if [ "$DRY" = 1 ]; then # resolve the set for CPython 3.12 x86-64 without installing
    "$PY" -m pip install --dry-run -q --no-index --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --target "$WORK/site-dry" "${wheels[@]}"
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  fi
}

versions() {
  nvidia-smi -L || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
for name in ("torchvision", "transformers", "timm", "kserve", "fastapi", "starlette", "uvicorn", "pydantic",
             "pydantic_settings", "numpy", "PIL", "psutil", "pandas", "pynvml", "redis", "simplejpeg"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')} ({mod.__file__.rsplit('/', 2)[0]})")
    except Exception as e:
        print(f"{name}: NOT IMPORTABLE: {e!r}")
from predictor.config import Settings
from predictor.engine import resolve_plan
print("auto plan:", resolve_plan(Settings()))
EOF
}

build_models() {
  if [ "$DRY" = 1 ] && [ -f models/efficientnet-lite0/config.json ]; then
    echo "models/efficientnet-lite0 exists (dry: not rebuilt)"
  else
    "$PY" -m models.build_default --out models/efficientnet-lite0 || return 1
  fi
  rm -rf "$RESNET"
  "$PY" -m models.random_resnet --out "$RESNET" --size "$RESNET_SIZE"
}

run_pytest() {
  local rc
  if [ "$DRY" = 1 ]; then
    "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider --collect-only
    rc=$?
    ((rc == 5)) && rc=0 # no CUDA here: every gpu test deselected (the summary line says how many)
    return "$rc"
  fi
  "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -rA --timeout 120 --basetemp "$WORK/pytest" \
    --junitxml "$OUT/pytest_junit.xml"
}

raw_probe() {
  local args=(--model_dir "$RESNET" --json_out "$OUT/raw_probe.json")
  if [ "$DRY" = 1 ]; then
    args+=(--device cpu --only torch/fp32 --batch_sizes "1,2" --seconds 0.2)
  else
    args+=(--device cuda --batch_sizes "1,2,4,8,16,32,64,128" --seconds 1 --max_call_seconds 10)
    [ "${GPU_SUITE_COMPILE:-0}" = 1 ] && args+=(--compile)
  fi
  "$PY" -m bench.raw_probe "${args[@]}" >"$WORK/raw_probe.txt" || { cat "$WORK/raw_probe.txt"; return 1; }
  sed '/^{/,$d' "$WORK/raw_probe.txt" | tee "$OUT/raw_probe.md"
}

serve_bench() {
  local args=(--model_dir "$RESNET" --fresh_cache --size 640x480 --skip_batch1 --raw_probe_json "$OUT/raw_probe.json"
    --preprocess_json "$WORK/none.json" --out "$WORK/serve/serve_bench.json" --md "$WORK/serve/serve_bench.md")
  if [ "$DRY" = 1 ]; then
    args+=(--concurrency 4 --duration 1 --rounds 1 --ramp_duration 0.3 --warmup 0.3 --overload_duration 1
      --protocols "classify")
  else
    # v2-binary is within noise of /classify on the CPU runs; the time goes to nvJPEG decoding instead.
    args+=(--concurrency "$CONC" --duration "$DURATION" --rounds 2 --ramp_duration 1.5 --warmup 1.5
      --overload_duration 6 --protocols "classify" --variant "nvjpeg:backend=torch,jpeg_decode=device")
  fi
  "$PY" -m bench.serve_bench "${args[@]}" >/dev/null || return 1
  cp "$WORK/serve/serve_bench.json" "$WORK/serve/serve_bench.md" "$OUT/"
  cat "$OUT/serve_bench.md"
}

# The event loop of one server process costs ~0.6 ms of CPU per request (docs/performance.md), so single-
# image requests cap one process well below what the GPU does: measure 1 vs 8 images per request.
multi_image() {
  local port=18555 dur=10 c1=256 c8=64 pid
  [ "$DRY" = 1 ] && dur=1 c1=4 c8=2
  mkdir -p "$WORK/serve"
  "$PY" -m predictor serve --model_dir "$RESNET" --http_port "$port" --max_batch_size 128 \
    --max_queue_images 4096 >"$WORK/serve/multi_image.log" 2>&1 &
  pid=$!
  "$PY" -c 'import sys, time, urllib.request as u
url = f"http://127.0.0.1:{sys.argv[1]}/v2/health/ready"
for _ in range(240):
    try:
        u.urlopen(url, timeout=1); sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(1)' "$port" || { kill "$pid"; tail -20 "$WORK/serve/multi_image.log"; return 1; }
  local n c
  for n in 1 8; do
    c=$c1
    [ "$n" = 8 ] && c=$c8
    echo "-- /classify, $n image(s) per request, concurrency $c, ${dur}s"
    "$PY" -m bench.loadgen --url "http://127.0.0.1:$port" --concurrency "$c" --duration "$dur" --warmup 2 \
      --images-per-request "$n" --size 640x480 2>/dev/null |
      "$PY" -c 'import json, sys; d = json.load(sys.stdin); print({k: d[k] for k in ("img_per_s", "req_per_s", "latency_ms", "errors", "timeouts") if k in d})'
  done
  kill "$pid"
  wait "$pid" 2>/dev/null
  return 0
}

export PY DRY OUT WORK SITE CONC DURATION
export -f install_wheels versions build_models run_pytest raw_probe serve_bench multi_image

main() {
  echo "== gpu suite: $(date -u +%FT%TZ), dry=$DRY, budget ${BUDGET}s, results in $OUT"
  stage install 60 install_wheels
  if [ "$DRY" != 1 ]; then
    export PYTHONPATH="$SITE:$PWD"
  else
    export PYTHONPATH="$PWD"
  fi
  stage versions 60 versions
  if [ "$DRY" = 1 ]; then RESNET_SIZE=tiny; else RESNET_SIZE=full; fi
  export RESNET=$WORK/resnet50-random RESNET_SIZE
  stage models 90 build_models
  stage pytest 200 run_pytest
  stage raw_probe 75 raw_probe
  stage serve_bench 200 serve_bench
  stage multi_image 60 multi_image
  (cd "$WORK" && find serve pytest -name '*.log' 2>/dev/null | tar -czf "$OUT/logs.tgz" -T -) || true
  echo "== summary (total ${SECONDS}s)"
  cat "$OUT/summary.txt"
  return $FAILED
}

main 2>&1 | tee "$OUT/suite.log"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
