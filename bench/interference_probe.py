"""What other threads on the forward pass's cores cost it: each engine alone, then with serving's decodes.

On a small machine the forward pass uses every core; a decode (or HTTP) thread that takes one of them
for a millisecond can stall the whole pass (a multi-threaded layer waits for its slowest thread), so a
decode costs the pass more than its own CPU time. This probe measures that directly, per engine, in
alternating rounds (:func:`timed_rounds`):

* ``alone``: img/s of batches of ``--batch`` random images, nothing else running;
* ``with decode``: the same while a pool of ``--decode_threads`` threads decodes as many real photos
  (``--photo``, at ``--size``) as each batch holds, i.e. one decode per image, as in serving;
* ``expected``: what ``with decode`` would be if each decode cost only its own CPU time:
  ``cores / (cores / alone + decode_cpu_per_image)``; ``stall = expected / with decode`` (1.0 = none).

Usage::

    .venv/bin/python -m bench.interference_probe --model_dir bench/results/models/resnet50-random
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("openvino/fp32/LATENCY", "openvino/fp32/THROUGHPUT", "onnxruntime/fp32")


def _engine(name: str, model_dir: Path, cache: Path, threads: int) -> Any:
    from predictor.engine import registry
    from predictor.preprocess import PreprocessSpec

    backend, precision, *hint = name.split("/")
    args = registry.BuildArgs(
        spec=PreprocessSpec.from_model_dir(model_dir), model_dir=model_dir, cache_dir=cache, device="cpu",
        precision=precision, threads=threads, openvino_hint=hint[0] if hint else "LATENCY",
    )  # fmt: skip
    engine = registry.create(backend, args)
    engine.load()
    return engine


def timed_rounds(
    engines: dict[str, Any],
    batch: np.ndarray,
    run: Callable[[Callable[[], float]], float],
    background_work: Callable[[int], Callable[[], None]] | None = None,
    rounds: int = 3,
    seconds_per_turn: float = 0.6,
) -> dict[str, float]:
    """Median img/s of each engine on ``batch``, the engines alternating over ``rounds`` rounds (a
    different one first each round, so a disturbance hits all of them).

    Each forward pass runs through ``run`` and is timed there; while it runs, ``background_work(n)``
    starts ``n`` decodes (as many as the batch holds) and returns a function that waits for them.
    """

    def one_pass(engine: Any) -> float:
        t0 = time.perf_counter()
        engine.infer(batch)
        return time.perf_counter() - t0

    per_round: dict[str, list[float]] = {k: [] for k in engines}
    names = list(engines)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            images, busy = 0, 0.0
            while busy < seconds_per_turn or images == 0:
                join = background_work(len(batch)) if background_work is not None else None
                busy += run(lambda e=engines[name]: one_pass(e))
                images += len(batch)
                if join is not None:
                    join()
            per_round[name].append(images / busy)
    return {k: round(statistics.median(v), 2) for k, v in per_round.items()}


def decode_cpu_ms(jpeg: bytes, spec: Any, n: int = 50) -> float:
    """CPU ms of one decode + resize + crop of ``jpeg`` (one thread, nothing else running)."""
    from predictor.preprocess import decode_image

    decode_image(jpeg, spec, 40_000_000)
    t0 = time.process_time()
    for _ in range(n):
        decode_image(jpeg, spec, 40_000_000)
    return 1000 * (time.process_time() - t0) / n


def probe(args: argparse.Namespace) -> dict[str, Any]:
    from bench.payloads import parse_size, sample_jpegs
    from bench.procs import renice_thread
    from predictor.preprocess import PreprocessSpec, decode_image

    cores = len(os.sched_getaffinity(0))
    spec = PreprocessSpec.from_model_dir(args.model_dir)
    jpeg = sample_jpegs(parse_size(args.size))[1]  # coffee
    threads = args.decode_threads or cores
    with tempfile.TemporaryDirectory() as tmp:
        engines = {n: _engine(n, args.model_dir, Path(args.cache_dir or tmp), args.threads or cores) for n in VARIANTS}
        for e in engines.values():
            e.warmup([1, args.batch])
        batch = np.random.default_rng(0).integers(0, 256, (args.batch, *spec.crop_hw, 3), dtype=np.uint8)
        nice = args.decode_nice
        with ThreadPoolExecutor(
            threads, thread_name_prefix="decode", initializer=renice_thread, initargs=(nice,)
        ) as pool:

            def work(n: int):
                futures = [pool.submit(decode_image, jpeg, spec, 40_000_000) for _ in range(n)]
                return lambda: [f.result() for f in futures] and None

            pool.submit(decode_image, jpeg, spec, 40_000_000).result()
            decode_ms = statistics.median(decode_cpu_ms(jpeg, spec) for _ in range(3))
            run = lambda fn: fn()  # noqa: E731 - the probe's thread is the inference thread
            per_round: dict[str, list[dict[str, float]]] = {"alone": [], "loaded": []}
            for _ in range(args.rounds):  # alone and with decode alternate, so both see the same host
                per_round["alone"].append(timed_rounds(engines, batch, run, None, 1, args.seconds))
                per_round["loaded"].append(timed_rounds(engines, batch, run, work, 1, args.seconds))
    medians = {k: {n: round(statistics.median(r[n] for r in rs), 2) for n in VARIANTS} for k, rs in per_round.items()}
    alone, loaded = medians["alone"], medians["loaded"]
    rows = []
    for n in VARIANTS:
        expected = cores / (cores / alone[n] + decode_ms / 1000)
        rows.append({"engine": n, "alone": alone[n], "with_decode": loaded[n], "expected": round(expected, 2),
                     "stall": round(expected / loaded[n], 3)})  # fmt: skip
    return {"cores": cores, "batch": args.batch, "size": args.size, "decode_threads": threads, "decode_nice": nice,
            "decode_cpu_ms_per_image": round(decode_ms, 2), "rows": rows}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    """The probe as a Markdown table."""
    lines = [
        f"{res['cores']} cores, batch {res['batch']}, one {res['size']} decode per image inferred "
        f"({res['decode_cpu_ms_per_image']} ms CPU each, {res['decode_threads']} decode threads)",
        "",
        "| engine | img/s alone | img/s with decode | expected if a decode cost only its CPU | stall |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['engine']} | {r['alone']} | {r['with_decode']} | {r['expected']} | {r['stall']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.interference_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, default=Path("bench/results/models/resnet50-random"))
    p.add_argument("--cache_dir", type=Path, default=None, help="artefact cache (default: a temp dir)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="640x480", help="size of the decoded photo, WxH")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0 = usable cores)")
    p.add_argument("--decode_threads", type=int, default=0, help="0 = usable cores, as the server")
    p.add_argument("--decode_nice", type=int, default=0, help="nice value of the decode threads (0 = as the server)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="forward-pass seconds per engine per round")
    p.add_argument("--json_out", type=Path, default=None)
    args = p.parse_args(argv)
    res = probe(args)
    print(markdown(res))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
