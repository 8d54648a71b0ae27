#!/usr/bin/env bash
# The benchmark suite (`make bench`): raw probe (the ceiling), preprocessing probe, then the serving
# comparison (ours vs the naive baseline, batching gain, overload, cold start), all in one run so that
# every ratio is against baselines measured on the same machine minutes apart.
# Results: bench/results/{raw_probe,interference_probe,preprocess_probe,serve_bench,thread_profile_*}.json
# and serve_bench.md (gitignored).
#
# Knobs (environment): PY, BENCH_OUT, BENCH_MODEL_DIR, BENCH_DURATION (s per run), BENCH_CONCURRENCY,
# BENCH_SIZE (WxH), BENCH_SERVE_ARGS (extra serve_bench flags; default: also measure our server with
# precision=bf16, the opt-in that does not keep the answers, and with the default before the speed
# check, openvino LATENCY), BENCH_SKIP_RAW=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${BENCH_OUT:-bench/results}
MODEL_DIR=${BENCH_MODEL_DIR:-$OUT/models/resnet50-random}
DURATION=${BENCH_DURATION:-30}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
SIZE=${BENCH_SIZE:-640x480}
SERVE_ARGS=${BENCH_SERVE_ARGS-"--variant bf16:precision=bf16 --variant latency:openvino_hint=LATENCY,backend=openvino"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"

echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) usable cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  echo "== building the random full-size ResNet-50 in $MODEL_DIR"
  "$PY" -m models.random_resnet --out "$MODEL_DIR" --size full
fi
# The first server start below must pay any export, as a fresh pod would.
rm -rf "$MODEL_DIR/.cache"

if [ "${BENCH_SKIP_RAW:-0}" != 1 ]; then
  echo "== raw probe (in-process forward passes: the ceiling)"
  "$PY" -m bench.raw_probe --model_dir "$MODEL_DIR" --json_out "$OUT/raw_probe.json" >"$OUT/raw_probe.txt"
  cat "$OUT/raw_probe.txt"
  rm -rf "$MODEL_DIR/.cache"
fi

echo "== interference probe (each engine alone, then with one decode per image beside it: the stall)"
"$PY" -m bench.interference_probe --model_dir "$MODEL_DIR" --cache_dir "$OUT/interference-cache" \
  --json_out "$OUT/interference_probe.json" | tee "$OUT/interference_probe.md"
rm -rf "$OUT/interference-cache"

echo "== preprocessing probe (ours vs AutoImageProcessor, ms per image)"
"$PY" -m bench.preprocess_probe --model_dir "$MODEL_DIR" --out "$OUT/preprocess_probe.json" >/dev/null

echo "== serving: ours vs naive vs ceiling, batching, overload, cold start"
# shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
"$PY" -m bench.serve_bench --model_dir "$MODEL_DIR" --duration "$DURATION" --concurrency "$CONCURRENCY" \
  --size "$SIZE" --raw_probe_json "$OUT/raw_probe.json" --preprocess_json "$OUT/preprocess_probe.json" \
  --out "$OUT/serve_bench.json" --md "$OUT/serve_bench.md" $SERVE_ARGS
echo "== where the server's CPU goes under the same load, per thread (auto, then OpenVINO's THROUGHPUT hint)"
for config in auto:openvino_hint=auto throughput:backend=openvino,openvino_hint=THROUGHPUT; do
  name=${config%%:*}
  flags=()
  IFS=, read -ra kvs <<<"${config#*:}"
  for kv in "${kvs[@]}"; do flags+=(--server_setting "$kv"); done
  "$PY" -m bench.thread_profile --model_dir "$MODEL_DIR" --concurrency "$CONCURRENCY" --size "$SIZE" \
    --duration "$((DURATION / 3 > 10 ? DURATION / 3 : 10))" "${flags[@]}" \
    --server_setting cache_dir="$MODEL_DIR/.cache" --out "$OUT/thread_profile_$name.json" >/dev/null
  echo "$name: $("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["img_per_s"], "img/s,", r["cpu_ms_per_image_total"], "ms CPU/img:", r["cpu_ms_per_image"])' "$OUT/thread_profile_$name.json")"
done
echo "== the headline of docs/performance.md, from this run (bench/headline.json)"
"$PY" -m bench.headline --from-serve-bench "$OUT/serve_bench.json" \
  --command "BENCH_DURATION=$DURATION BENCH_CONCURRENCY=$CONCURRENCY BENCH_SIZE=$SIZE bash bench/run_all.sh"
echo "== done: $OUT/serve_bench.md"
