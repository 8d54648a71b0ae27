"""Raw probe: in-process forward-pass throughput of one model, per backend x precision x batch size.

No HTTP and no decoding: random uint8 ``[N,H,W,3]`` batches go straight into each engine's ``infer``
(so on-device/in-graph normalisation is included, as in serving). The best img/s over all rows and
batch sizes is the ceiling the end-to-end benchmark is compared with.

Usage::

    python -m bench.raw_probe                       # random full-size ResNet-50 (built in a temp dir)
    python -m bench.raw_probe --model_dir models/efficientnet-lite0 --seconds 2 --json_out probe.json

Numbers on a shared machine are noisy; each point runs one warm-up call, then as many calls as fit in
``--seconds`` (at least one). Logits that are not finite (NaN or inf, e.g. an fp16 overflow) fail the
point instead of timing it; a config that fails to load or run is recorded with its error and the
probe goes on with the next. ``--jsonl`` appends every point as soon as it is measured. On CUDA, "fp32"
means TF32 convolutions (cuDNN's default).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class ProbeConfig:
    """One row of the table: a backend, precision and backend knobs."""

    backend: str
    precision: str
    device: str = "cpu"
    openvino_hint: str = "LATENCY"
    compile: bool = False

    @property
    def name(self) -> str:
        """Row label, e.g. ``openvino/bf16/THROUGHPUT``."""
        extra = f"/{self.openvino_hint}" if self.backend == "openvino" else ("/compile" if self.compile else "")
        return f"{self.backend}/{self.precision}{extra}@{self.device}"


def available_configs(cuda: bool, compile_torch: bool) -> list[ProbeConfig]:
    """Every backend x precision that runs here (bf16 rows only where the runtime supports them)."""
    from predictor.engine.cpu import detect_cpu

    configs: list[ProbeConfig] = []
    if cuda:
        import onnxruntime as ort

        configs += [ProbeConfig("torch", "fp16", "cuda"), ProbeConfig("torch", "fp32", "cuda")]
        if compile_torch:
            configs.append(ProbeConfig("torch", "fp16", "cuda", compile=True))
        if "CUDAExecutionProvider" in ort.get_available_providers():
            configs += [ProbeConfig("onnxruntime", "fp16", "cuda"), ProbeConfig("onnxruntime", "fp32", "cuda")]
        return configs
    configs += [ProbeConfig("torch", "fp32"), ProbeConfig("torch", "bf16")]
    if compile_torch:
        configs.append(ProbeConfig("torch", "fp32", compile=True))
    configs.append(ProbeConfig("onnxruntime", "fp32"))
    from predictor.engine.openvino_engine import openvino_supports

    ov_precisions = ["fp32"] + [p for p in ("bf16", "fp16") if openvino_supports(p)]
    for hint in ("LATENCY", "THROUGHPUT"):
        configs += [ProbeConfig("openvino", p, openvino_hint=hint) for p in ov_precisions]
    logger.info("CPU: %s", detect_cpu().describe())
    return configs


def make_engine(cfg: ProbeConfig, model_dir: Path, cache_dir: Path, threads: int, max_batch: int) -> Any:
    """Build (through the engine registry, as the server does) and load the engine for one row."""
    from predictor.engine import registry
    from predictor.preprocess import PreprocessSpec

    args = registry.BuildArgs(
        spec=PreprocessSpec.from_model_dir(model_dir), model_dir=model_dir, cache_dir=cache_dir, device=cfg.device,
        precision=cfg.precision, threads=threads, max_batch_size=max_batch, torch_compile=cfg.compile,
        openvino_hint=cfg.openvino_hint,
    )  # fmt: skip
    engine = registry.create(cfg.backend, args)
    engine.load()
    return engine


def measure(engine: Any, batch_size: int, seconds: float, rng: np.random.Generator) -> float:
    """img/s of ``engine.infer`` at ``batch_size``: one warm-up call, then calls for ``seconds``.

    Raises:
        RuntimeError: the engine returned the wrong number of rows, or logits that are not finite.
    """
    h, w = engine.input_hw
    batch = rng.integers(0, 256, size=(batch_size, h, w, 3), dtype=np.uint8)
    out = engine.infer(batch)
    if out.shape[0] != batch_size:
        raise RuntimeError(f"{batch_size} inputs gave {out.shape[0]} rows")
    if not np.isfinite(out).all():
        raise RuntimeError(f"batch {batch_size}: {int((~np.isfinite(out)).sum())} logits are NaN or infinite")
    calls, start = 0, time.perf_counter()
    while True:
        engine.infer(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * batch_size / elapsed


def run_probe(
    model_dir: Path,
    batch_sizes: list[int],
    seconds: float,
    threads: int,
    cuda: bool,
    compile_torch: bool,
    only: list[str] | None = None,
    max_call_seconds: float = 60.0,
    jsonl: Path | None = None,
) -> dict[str, Any]:
    """Measure every available config at every batch size; returns the JSON-able result."""
    from bench.report import append_jsonl

    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float | None]] = {}
    load_s: dict[str, float] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="raw-probe-cache-") as cache:
        for cfg in available_configs(cuda, compile_torch):
            if only and not any(o in cfg.name for o in only):
                continue
            rows[cfg.name] = {}
            try:
                _probe_config(cfg, model_dir, Path(cache), threads, batch_sizes, seconds, max_call_seconds,
                              rng, rows[cfg.name], load_s, jsonl)  # fmt: skip
            except Exception as e:  # one broken config (no CUDA provider, NaN logits) must not end the probe
                errors[cfg.name] = f"{type(e).__name__}: {e}"
                logger.error("%s failed: %s", cfg.name, errors[cfg.name])
                append_jsonl(jsonl, {"stage": "raw_probe", "config": cfg.name, "error": errors[cfg.name]})
    points = [(name, bs, v) for name, row in rows.items() for bs, v in row.items() if v is not None]
    best = max(points, key=lambda t: t[2], default=None)
    return {
        "model_dir": str(model_dir),
        "machine": _machine(cuda),
        "threads": threads,
        "seconds_per_point": seconds,
        "img_per_s": rows,
        "load_seconds": load_s,
        "errors": errors,
        "ceiling": {"config": best[0], "batch_size": int(best[1]), "img_per_s": best[2]} if best else None,
    }


def _probe_config(
    cfg: ProbeConfig, model_dir: Path, cache: Path, threads: int, batch_sizes: list[int], seconds: float,
    max_call_seconds: float, rng: np.random.Generator, row: dict[str, float | None], load_s: dict[str, float],
    jsonl: Path | None,
) -> None:  # fmt: skip
    """Every batch size of one config into ``row`` (and ``jsonl`` as each is measured)."""
    from bench.report import append_jsonl

    t0 = time.perf_counter()
    engine = make_engine(cfg, model_dir, cache, threads, max(batch_sizes))
    load_s[cfg.name] = round(time.perf_counter() - t0, 2)
    try:
        for n in batch_sizes:
            done = list(row.values())
            if None in done or n * 2 / max(done, default=float("inf")) > max_call_seconds:
                # Two calls (warm-up + one timed) at the last rate would exceed the budget.
                row[str(n)] = None
                logger.info("%s batch %d: skipped (too slow for --max_call_seconds)", cfg.name, n)
                continue
            row[str(n)] = round(measure(engine, n, seconds, rng), 2)
            logger.info("%s batch %d: %.1f img/s", cfg.name, n, row[str(n)])
            append_jsonl(jsonl, {"stage": "raw_probe", "config": cfg.name, "device": cfg.device,
                                 "batch_size": n, "img_per_s": row[str(n)], "info": vars(engine.info)})  # fmt: skip
    finally:
        engine.close()


def _machine(cuda: bool) -> str:
    from bench.procs import gpu_info
    from predictor.engine.cpu import detect_cpu

    text = f"{detect_cpu().describe()}, {platform.machine()}"
    if cuda:
        text += f", GPU {gpu_info()}"
    return text


def format_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per config, one column per batch size (img/s)."""
    rows = {name: row for name, row in result["img_per_s"].items() if row}
    if not rows:
        return "no config measured: " + "; ".join(f"{k}: {v}" for k, v in result.get("errors", {}).items())
    sizes = list(next(iter(rows.values())).keys())
    lines = [
        "| config | " + " | ".join(f"bs {s}" for s in sizes) + " | best |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for name, row in rows.items():
        cells = " | ".join("—" if row[s] is None else f"{row[s]:.1f}" for s in sizes)
        best = max((v for v in row.values() if v is not None), default=None)
        lines.append(f"| {name} | {cells} | {'—' if best is None else f'{best:.1f}'} |")
    for name, err in result.get("errors", {}).items():
        lines.append(f"| {name} | failed: {err} |")
    c = result["ceiling"]
    if c:
        lines.append(f"\nceiling: {c['img_per_s']:.1f} img/s ({c['config']}, batch {c['batch_size']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="In-process forward-pass img/s per backend and batch size.")
    parser.add_argument("--model_dir", type=Path, default=None, help="HF model dir (default: random ResNet-50)")
    parser.add_argument("--batch_sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="comma list")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per point")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = usable cores")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument(
        "--max_call_seconds",
        type=float,
        default=60.0,
        help="skip larger batch sizes of a config once two calls would take longer than this",
    )
    parser.add_argument("--only", default="", help="comma list of substrings; run only matching configs")
    parser.add_argument("--json_out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--jsonl", type=Path, default=None, help="append every point here as it is measured")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from predictor.config import Settings

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    threads = args.threads or Settings().usable_cores()
    batch_sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="raw-probe-model-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from models.random_resnet import build_random_resnet

            model_dir = build_random_resnet(Path(tmp) / "resnet50-random", size="full")
        only = [o for o in args.only.split(",") if o] or None
        result = run_probe(
            model_dir, batch_sizes, args.seconds, threads, cuda, args.compile, only, args.max_call_seconds, args.jsonl
        )
    result["command"] = " ".join(["python -m bench.raw_probe", *(argv if argv is not None else sys.argv[1:])])
    print(format_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
