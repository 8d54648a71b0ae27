#!/usr/bin/env bash
# The GPU check in one command, for the lent GPU machine (one H200, 16 cores, no network, python3 = 3.12
# with its own torch; /work/.library/device/KINDS.md). It has to succeed on its first and only try, so:
#
# * it fits a fixed budget: every stage has a planned limit, the plan is printed first and must fit
#   GPU_SUITE_BUDGET_S minus a reserve (a plan that does not fit fails at once, dry run included);
# * stages run in order of value: the machine's facts, then the serving comparison and the raw fp16
#   probe, then the slow tests (server, DCGM and nvJPEG tests first), then optional extras;
# * results are saved as they are measured (JSON lines, flushed per row), so a stage cut off by its limit
#   keeps every row it measured; pytest is stopped with SIGINT so it still writes its summary and junit;
# * nothing measured elsewhere passes for a GPU number: each server's backend/device/dtype is recorded
#   with its rows, and a server that is not on cuda fails the stage loudly.
#
# Before the call, here: `bash scripts/gpu_wheels.sh` (re-creates .whl/, ignored by git).
# The call (device tool `run`):
#
#   command:   bash bench/gpu_suite.sh
#   carry:     [".whl"]
#   timeout_s: 600
#
# Results under $OUT (set by the device tool; default bench/results/gpu), flat, at most 8 files:
#   suite.log       everything printed          summary.txt      stage, status, seconds
#   results.jsonl   every measured row, by stage (facts, raw_probe, serve_bench)
#   serve_bench.md  the serving report          raw_probe.md     the raw probe table
#   pytest_junit.xml                            logs.tgz         server and pytest logs
#   capacity.json   the planner's capacity profile of this GPU (python -m predictor plan --capacity ...)
#
# Knobs (environment):
#   PY                    python (default python3)
#   GPU_SUITE_BUDGET_S    the suite's own budget (default 510 s, inside the 600 s call; the machine's start is extra)
#   GPU_SUITE_CONCURRENCY single-image concurrency of the serving runs (default 128)
#   GPU_SUITE_DURATION    measured seconds per serving configuration, over 2 rounds (default 12)
#   GPU_SUITE_COMPILE=1   add the torch.compile stage (CUDA graphs; minutes: raise the budget, see the plan)
#   GPU_SUITE_ONLY="a b"  run only these stages (the others are reported "not selected")
#   GPU_SUITE_WHEELS=DIR  the wheels to install (default .whl, as scripts/gpu_wheels.sh writes and the call carries)
#   GPU_SUITE_LIMIT_<stage>=N  override one stage's limit (seconds)
#   GPU_SUITE_PLAN=1      print the plan and exit (0 if it fits the budget, 1 if not)
#   GPU_SUITE_DRY=1       the same stages with tiny settings on a machine without a GPU (CPU, a tiny random
#                         ResNet, pytest --collect-only, a pip --dry-run of the wheels for CPython 3.12), to
#                         check the plumbing; use PY=.venv/bin/python there.
# shellcheck disable=SC2329  # the stage functions run through `stage` (timeout bash -c)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PY=${PY:-python3}
DRY=${GPU_SUITE_DRY:-0}
OUT=${OUT:-bench/results/gpu}
BUDGET=${GPU_SUITE_BUDGET_S:-510}
CONC=${GPU_SUITE_CONCURRENCY:-128}
DURATION=${GPU_SUITE_DURATION:-12}
COMPILE=${GPU_SUITE_COMPILE:-0}
WHEELS=${GPU_SUITE_WHEELS:-.whl} # where scripts/gpu_wheels.sh put them (the carried .whl on the GPU machine)
ONLY=${GPU_SUITE_ONLY:-}
RESERVE=15 # seconds kept back at the end for the summary and the logs archive
SITE=/tmp/site
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The plan: stage and planned limit (seconds), in running order. Sum + RESERVE must fit BUDGET.
PLAN=(
  "facts 20"        # nvidia-smi, python, preinstalled torch & co: known even if everything else fails
  "install 40"      # the carried wheels into /tmp/site
  "imports 25"      # the project's imports on this machine: kserve + grpc, engine plan, nvJPEG, NVML
  "models 40"       # EfficientNet-Lite0 (real weights, from a wheel) and a random full ResNet-50
  "raw_probe 55"    # torch fp16/fp32 (TF32) on CUDA, batch 1..128: the ceiling
  "serve_bench 160" # ours auto / fp16 / fp16+nvJPEG vs naive on CUDA, 8 images per request, short overload
  "pytest 100"      # -m gpu: server + DCGM + nvJPEG first, then fp16 answers, batch sizes, ONNX Runtime, then
                    # GPU memory filled for real (split + cap), gpu_memory_fraction, a broken context (test_cuda_memory.py)
  "capacity 55"     # the planner's capacity profile of this GPU pod (ResNet-50 fp16), short points
)
[ "$COMPILE" = 1 ] && PLAN+=("compile 150") # torch.compile buckets: raw probe rows and the compiled-answers test
# selftest: a stage for the suite's own tests (writes a row, then sleeps); runs only when named in GPU_SUITE_ONLY.
[[ " $ONLY " == *" selftest "* ]] && PLAN+=("selftest 30")

limit_of() { # limit_of STAGE: the planned limit, or GPU_SUITE_LIMIT_<stage>
  local name=$1 entry var
  var="GPU_SUITE_LIMIT_$name"
  if [ -n "${!var:-}" ]; then
    echo "${!var}"
    return
  fi
  for entry in "${PLAN[@]}"; do
    [ "${entry% *}" = "$name" ] && echo "${entry#* }" && return
  done
  echo 0
}

print_plan() { # prints the plan; returns 1 when it does not fit the budget
  local total=0 entry name lim
  echo "== plan (budget ${BUDGET}s, reserve ${RESERVE}s)"
  for entry in "${PLAN[@]}"; do
    name=${entry% *}
    lim=$(limit_of "$name")
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
      printf '   %-12s %4ss  (not selected)\n' "$name" "$lim"
      continue
    fi
    total=$((total + lim))
    printf '   %-12s %4ss\n' "$name" "$lim"
  done
  printf '   %-12s %4ss of %ss\n' "total" "$((total + RESERVE))" "$BUDGET"
  if ((total + RESERVE > BUDGET)); then
    echo "== plan exceeds the budget by $((total + RESERVE - BUDGET))s: shorten stages or raise GPU_SUITE_BUDGET_S" >&2
    return 1
  fi
  return 0
}

if [ "${GPU_SUITE_PLAN:-0}" = 1 ]; then
  print_plan
  exit $?
fi

WORK=$(mktemp -d /tmp/gpu-suite.XXXXXX)
DEADLINE=$((SECONDS + BUDGET))
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
: >"$OUT/summary.txt"
: >"$RESULTS"
FAILED=0

# stage NAME CMD...: run CMD under `timeout` (SIGTERM, or SIGINT for pytest), limited to its planned limit
# and to what is left of the budget; a failed stage does not stop the next one.
stage() {
  local name=$1 limit rc t0 signal=TERM
  shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
    printf '%-12s %-22s %4ss\n' "$name" "not selected" 0 >>"$OUT/summary.txt"
    return
  fi
  limit=$(limit_of "$name")
  local left=$((DEADLINE - SECONDS - RESERVE))
  ((left < limit)) && limit=$left
  if ((left < 5)); then
    echo "== $name: skipped, budget spent"
    printf '%-12s %-22s %4ss\n' "$name" "skipped (budget)" 0 >>"$OUT/summary.txt"
    FAILED=1
    return
  fi
  [ "$name" = pytest ] || [ "$name" = compile ] && signal=INT # pytest reports and writes junit on SIGINT
  echo "== $name (limit ${limit}s) $(date -u +%T)"
  t0=$SECONDS
  # A new process group per stage: a timeout ends the servers it started too.
  timeout -s "$signal" --kill-after=10 "$limit" bash -c 'set -o pipefail; "$@"' "$name" "$@"
  rc=$?
  local status="ok"
  if ((rc == 124 || rc == 137)); then # timeout's status, whichever signal it sent
    status="TIMEOUT after ${limit}s"
  elif ((rc != 0)); then
    status="FAILED rc=$rc"
  fi
  [ "$status" = ok ] || FAILED=1
  echo "== $name: $status in $((SECONDS - t0))s"
  printf '%-12s %-22s %4ss\n' "$name" "$status" "$((SECONDS - t0))" >>"$OUT/summary.txt"
}

facts() { # no project code: what the machine is, even if nothing else runs
  nvidia-smi -L || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,mig.mode.current --format=csv,noheader || true
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  "$PY" - "$RESULTS" <<'EOF'
import importlib.metadata as md, json, platform, sys
facts = {"stage": "facts", "python": platform.python_version(), "executable": sys.executable}
for dist in ("torch", "torchvision", "transformers", "timm", "onnxruntime", "onnxruntime-gpu", "grpcio", "protobuf",
             "numpy", "pillow", "pytest", "pytest-timeout", "nvidia-ml-py", "safetensors", "fastapi", "uvicorn"):
    try:
        facts[dist] = md.version(dist)
    except md.PackageNotFoundError:
        facts[dist] = None
print(json.dumps(facts))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(facts) + "\n")
EOF
}

install_wheels() {
  local wheels=("$WHEELS"/*.whl)
  [ -e "${wheels[0]}" ] || { echo "no wheels in $WHEELS/: run scripts/gpu_wheels.sh and carry .whl" >&2; return 1; }
  echo "${#wheels[@]} wheels"
  if [ "$DRY" = 1 ]; then # resolve the set for CPython 3.12 x86-64 without installing
    "$PY" -m pip install --dry-run -q --no-index --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --target "$WORK/site-dry" "${wheels[@]}"
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  fi
}

imports() { # the project's view of the machine; fails when the server could not start here
  "$PY" - "$RESULTS" "$DRY" <<'EOF'
import json, sys, time
row = {"stage": "facts", "kind": "imports"}
import torch
row["torch"] = torch.__version__
row["torch_file"] = torch.__file__
row["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    row.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
import google.protobuf, grpc
row["protobuf"], row["grpcio"] = google.protobuf.__version__, grpc.__version__
import kserve
from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc  # noqa: F401 - gencode/runtime check
row["kserve"] = __import__("importlib.metadata").metadata.version("kserve")
import onnxruntime as ort
row["onnxruntime_providers"] = ort.get_available_providers()
from predictor.config import Settings
from predictor.engine import choose
row["auto_choice"] = str(choose(Settings()))
try:
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    row["nvml"] = {"driver": pynvml.nvmlSystemGetDriverVersion(), "memory_used_mib": pynvml.nvmlDeviceGetMemoryInfo(h).used >> 20}
    try:
        row["nvml"]["util"] = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
    except Exception as e:
        row["nvml"]["util"] = f"unreadable: {e}"
except Exception as e:
    row["nvml"] = f"unavailable: {e!r}"
if torch.cuda.is_available():  # the hardware JPEG decoder (nvJPEG through torchvision)
    import io
    from PIL import Image
    from torchvision.io import decode_jpeg
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")
    t0 = time.perf_counter()
    try:
        img = decode_jpeg(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), device="cuda")
        row["nvjpeg"] = {"ok": list(img.shape) == [3, 48, 64] and img.is_cuda, "first_call_s": round(time.perf_counter() - t0, 3)}
    except Exception as e:
        row["nvjpeg"] = {"ok": False, "error": repr(e)}
print(json.dumps(row, indent=1))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(row) + "\n")
if sys.argv[2] != "1" and not row["cuda_available"]:
    sys.exit("no CUDA device visible to torch: every later number would be a CPU number")
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

raw_probe() {
  local args=(--model_dir "$RESNET" --json_out "$WORK/raw_probe.json" --jsonl "$RESULTS")
  if [ "$DRY" = 1 ]; then
    args+=(--device cpu --only torch/fp32 --batch_sizes "1,2" --seconds 0.2)
  else
    args+=(--device cuda --only torch/fp16@,torch/fp32@,onnxruntime --batch_sizes "1,2,4,8,16,32,64,128"
      --seconds 1 --max_call_seconds 10)
  fi
  local rc=0
  "$PY" -m bench.raw_probe "${args[@]}" >"$WORK/raw_probe.txt" || rc=$?
  sed '/^{/,$d' "$WORK/raw_probe.txt" | tee "$OUT/raw_probe.md"
  return "$rc"
}

serve_bench() {
  local args=(--model_dir "$RESNET" --fresh_cache --size 640x480 --skip_batch1 --skip_ramp --parallel_start
    --raw_probe_json "$WORK/raw_probe.json" --preprocess_json "$WORK/none.json" --jsonl "$RESULTS"
    --out "$WORK/serve/serve_bench.json" --md "$OUT/serve_bench.md" --protocols classify
    --variant "fp16:precision=fp16" --variant "nvjpeg:precision=fp16,backend=torch,jpeg_decode=device"
    --multi_image 8 --multi_image_server ours_fp16)
  if [ "$DRY" = 1 ]; then
    args+=(--concurrency 4 --duration 1 --rounds 1 --warmup 0.3 --overload_duration 1 --multi_image_concurrency 2
      --server_setting precision=fp32)
    args=("${args[@]/precision=fp16/precision=fp32}") # no fp16 on a CPU: the same plumbing in fp32
  else
    # 8 images x 24 requests = 192 in flight, under the default max_queue_images (256)
    args+=(--concurrency "$CONC" --duration "$DURATION" --rounds 2 --warmup 1 --overload_duration 3
      --multi_image_concurrency 24 --expect_device cuda)
  fi
  "$PY" -m bench.serve_bench "${args[@]}" >/dev/null
}

run_pytest() {
  if [ "$DRY" = 1 ]; then
    local rc=0
    "$PY" -m pytest -m "gpu and not compile" tests/gpu -q -p no:cacheprovider -p no:asyncio --collect-only || rc=$?
    ((rc == 5)) && rc=0 # no CUDA here: every gpu test deselected (the summary line says how many)
    return "$rc"
  fi
  # -p no:asyncio: the GPU tests need no event loop, and the machine's pytest may not suit the plugin.
  "$PY" -m pytest -m "gpu and not compile" tests/gpu -q -p no:cacheprovider -p no:asyncio -rA --timeout 90 \
    --basetemp "$WORK/pytest" --junitxml "$OUT/pytest_junit.xml"
}

compile_stage() {
  local rc=0
  if [ "$DRY" = 1 ]; then
    "$PY" -m pytest -m "gpu and compile" tests/gpu -q -p no:cacheprovider -p no:asyncio --collect-only || rc=$?
    ((rc == 5)) && rc=0
    return "$rc"
  fi
  "$PY" -m bench.raw_probe --model_dir "$RESNET" --device cuda --compile --only compile --batch_sizes "1,8,32,128" \
    --seconds 1 --max_call_seconds 20 --jsonl "$RESULTS" >"$WORK/compile_probe.txt" || rc=$?
  sed '/^{/,$d' "$WORK/compile_probe.txt"
  "$PY" -m pytest -m "gpu and compile" tests/gpu -q -p no:cacheprovider -p no:asyncio -rA --timeout 120 \
    --basetemp "$WORK/pytest-compile" || rc=$?
  return "$rc"
}

capacity() { # the planner's pod model for this GPU: short points (the full profile: make bench-capacity there)
  local args=(--model_dir "$RESNET" --out "$OUT/capacity.json" --retries 1 --max_others_busy 16)
  if [ "$DRY" = 1 ]; then
    args+=(--duration 0.5 --warmup 0.2 --concurrency 2 --rates 1.0 --batch_sizes 1,2 --raw_seconds 0.1
      --setting precision=fp32)
  else
    args+=(--duration 2 --warmup 0.5 --concurrency 16,128 --rates 0.5,1.0,1.3 --batch_sizes 1,8,32,128
      --raw_seconds 0.5 --setting precision=fp16)
  fi
  "$PY" -m bench.capacity "${args[@]}" >/dev/null
}

selftest() { # for tests/bench/test_gpu_suite.py: a row, then longer than any limit the test gives it
  echo '{"stage": "selftest", "row": 1}' >>"$RESULTS"
  sleep 60
}

export PY DRY OUT WORK SITE CONC DURATION RESULTS WHEELS
export -f facts install_wheels imports build_models raw_probe serve_bench run_pytest capacity compile_stage selftest

main() {
  echo "== gpu suite: $(date -u +%FT%TZ), dry=$DRY, results in $OUT"
  print_plan || return 1
  stage facts facts
  stage install install_wheels
  if [ "$DRY" != 1 ]; then
    export PYTHONPATH="$SITE:$PWD"
  else
    export PYTHONPATH="$PWD"
  fi
  stage imports imports
  if [ "$DRY" = 1 ]; then RESNET_SIZE=tiny; else RESNET_SIZE=full; fi
  export RESNET=$WORK/resnet50-random RESNET_SIZE
  stage models build_models
  stage raw_probe raw_probe
  stage serve_bench serve_bench
  stage pytest run_pytest
  stage capacity capacity
  [ "$COMPILE" = 1 ] && stage compile compile_stage
  [[ " $ONLY " == *" selftest "* ]] && stage selftest selftest
  (cd "$WORK" && find serve pytest pytest-compile -name '*.log' 2>/dev/null | tar -czf "$OUT/logs.tgz" -T -) || true
  echo "== summary (total ${SECONDS}s)"
  cat "$OUT/summary.txt"
  echo "== $(wc -l <"$RESULTS") result rows in results.jsonl"
  return $FAILED
}

main 2>&1 | tee "$OUT/suite.log"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
