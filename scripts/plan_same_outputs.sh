#!/usr/bin/env bash
# Does a refactor of the planner change what it computes? Runs the same `python -m predictor plan` scenarios
# (fixed seeds; both engines, KPA/HPA/KEDA, Karpenter spot reclaims, 503s, 504s, failed requests, scale from
# zero, --recommend) on BASE (a git revision, default HEAD) and on the working tree, then compares
# summary.json and timeline.csv byte for byte, and report.md but for its line naming the chart's directory.
#
#   scripts/plan_same_outputs.sh [BASE]      (from the repository root; needs .venv and .tools: make venv tools)
#
# Exit 0 when every output is the same, 1 when one differs. The outputs stay in the printed directory.
set -euo pipefail

base_rev=${1:-HEAD}
root=$(git rev-parse --show-toplevel)
cd "$root"
[ -x .venv/bin/python ] || { echo "no .venv: run make venv" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plan-same-XXXXXX")
mkdir -p "$tmp/base" "$tmp/in"
git archive "$base_rev" | tar -x -C "$tmp/base"

cat > "$tmp/in/burst.yaml" <<'EOF'
name: burst
description: "60 -> 30000 requests per minute for 5 minutes: far over a few pods' capacity."
duration: 20m
arrivals: poisson
segments:
  - kind: points
    points: [[0, 60]]
  - kind: spike
    at: 4m
    duration: 5m
    ramp: 20s
    rate_per_min: 30000
    mode: set
EOF
printf 'settings:\n  max_queue_images: 32\nautoscaling:\n  maxReplicas: 3\n' > "$tmp/in/small-queue.yaml"
printf 'autoscaling:\n  maxReplicas: 3\n' > "$tmp/in/three-replicas.yaml"

# run_all TREE OUTDIR: every scenario with TREE's predictor package and chart
run_all() {
    local tree=$1 dest=$2 out="$tmp/out" in="$tmp/in"
    rm -rf "$out" && mkdir -p "$out"
    plan() {
        (cd "$tree" && PYTHONPATH="$tree" PATH="$root/.tools:$PATH" "$root/.venv/bin/python" -m predictor plan \
            --no-plots --progress off "$@" >/dev/null)
    }
    local knspot=chart/ci/gpu-spot-knative-canary-values.yaml cpu=cpu-epyc-2c-efficientnet-lite0
    plan --values $knspot --values "$in/small-queue.yaml" --traffic "$in/burst.yaml" --capacity $cpu \
        --engine request --assume seed=9 --assume spot_interruptions_per_node_hour=30 --out "$out/burst-kn-des"
    plan --values $knspot --values "$in/three-replicas.yaml" --traffic "$in/burst.yaml" --capacity $cpu \
        --engine request --assume seed=4 --assume spot_interruptions_per_node_hour=30 --assume spot_notice_s=1 \
        --out "$out/burst-kill-des"
    plan --values chart/ci/standard-keda-values.yaml --values "$in/small-queue.yaml" --traffic "$in/burst.yaml" \
        --capacity $cpu --engine request --assume seed=3 --out "$out/burst-keda-des"
    plan --values $knspot --traffic docs/traffic/peak.yaml --capacity $cpu --engine request --assume seed=7 \
        --assume spot_interruptions_per_node_hour=2 --out "$out/peak-kn-des"
    plan --values chart/ci/standard-hpa-values.yaml --traffic docs/traffic/diurnal-day.yaml \
        --capacity estimate-l4-resnet50 --engine fluid --assume seed=5 --out "$out/day-hpa-fluid"
    plan --values $knspot --traffic docs/traffic/peak.yaml --capacity estimate-a10g-resnet50 --engine fluid \
        --assume seed=11 --assume spot_interruptions_per_node_hour=1.0 --out "$out/peak-kn-fluid"
    plan --values $knspot --traffic docs/traffic/spike.yaml --capacity estimate-l4-resnet50 --assume seed=1 \
        --recommend --out "$out/spike-recommend"
    mv "$out" "$dest"
}

run_all "$tmp/base" "$tmp/before"
run_all "$root" "$tmp/after"

rc=0
for d in $(ls "$tmp/before"); do
    for f in summary.json timeline.csv; do
        if cmp -s "$tmp/before/$d/$f" "$tmp/after/$d/$f"; then
            echo "same  $d/$f ($(wc -c < "$tmp/after/$d/$f") bytes)"
        else
            echo "DIFF  $d/$f"; rc=1
        fi
    done
    if diff -q <(grep -v '; chart `' "$tmp/before/$d/report.md") <(grep -v '; chart `' "$tmp/after/$d/report.md") \
        >/dev/null; then
        echo "same  $d/report.md (but the chart's directory)"
    else
        echo "DIFF  $d/report.md"; rc=1
    fi
done
echo "outputs: $tmp/before ($base_rev) and $tmp/after (working tree)"
exit $rc
