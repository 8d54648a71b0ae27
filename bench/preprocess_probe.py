"""Preprocessing probe: per-image time of our path vs ``AutoImageProcessor``, for several photo sizes.

Ours: :func:`predictor.preprocess.decode_image` (reduced-size JPEG decode, uint8 resize and crop),
timed alone and with the CPU reference normalisation (:meth:`PreprocessSpec.normalize`, which the
server does on whole batches on the engine's device instead). Theirs: ``PIL.Image.open(...)
.convert("RGB")`` then the model's ``AutoImageProcessor`` (``return_tensors="np"``, or ``"pt"`` where
the processor allows only that, as the default model's TimmWrapperImageProcessor), both the class
``AutoImageProcessor`` picks by default and the other backend (PIL/numpy or torchvision).
Single-threaded by default, since the server decodes one image per core.

Usage::

    python -m bench.preprocess_probe --model_dir models/resnet-50 --sizes 320x240,640x480,1920x1080,4000x3000
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.payloads import parse_size, sample_jpegs

DEFAULT_SIZES = ("320x240", "640x480", "1920x1080", "4000x3000")


def time_interleaved_ms(
    fns: dict[str, Callable[[bytes], object]], images: list[bytes], min_time_s: float
) -> dict[str, list[float]]:
    """Per-image milliseconds of every path, round by round; the paths alternate within each round so
    that a noisy neighbour slows all of them alike (compare them round by round)."""
    for fn in fns.values():  # warm-up: caches, lazy imports
        for img in images:
            fn(img)
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    t_end = time.perf_counter() + min_time_s * len(fns)
    while len(rounds[next(iter(fns))]) < 5 or time.perf_counter() < t_end:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for img in images:
                fn(img)
            rounds[name].append((time.perf_counter() - t0) / len(images) * 1000.0)
        if len(rounds[next(iter(fns))]) >= 300:
            break
    return rounds


def _paired_speedup(theirs: list[float], ours: list[float]) -> float:
    return round(statistics.median(t / o for t, o in zip(theirs, ours, strict=True)), 2)


def _processors(model_dir: Path) -> dict[str, Any]:
    """The default ``AutoImageProcessor`` and, when available, the other backend (PIL or torchvision)."""
    import warnings

    from transformers import AutoImageProcessor

    default = AutoImageProcessor.from_pretrained(model_dir)
    backend = getattr(default, "backend", None) or ("torchvision" if getattr(default, "is_fast", False) else "pil")
    out = {f"hf_{backend}_default": default}
    other = "pil" if backend == "torchvision" else "torchvision"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out[f"hf_{other}"] = AutoImageProcessor.from_pretrained(model_dir, backend=other)
        except (TypeError, ValueError, ImportError, OSError):
            try:  # transformers < 5: use_fast selects the torchvision variant
                out[f"hf_{other}"] = AutoImageProcessor.from_pretrained(model_dir, use_fast=other == "torchvision")
            except (ImportError, ValueError, OSError):
                pass
    return out


def _tensor_kind(proc: Any) -> str:
    """``"np"``, or ``"pt"`` for processors that return only torch tensors (``TimmWrapperImageProcessor``,
    the default model's, refuses anything else)."""
    from PIL import Image

    try:
        proc(images=Image.new("RGB", (32, 32)), return_tensors="np")
    except ValueError:
        return "pt"
    return "np"


def run_probe(
    model_dir: Path, sizes: list[tuple[int, int]], min_time_s: float = 1.0, threads: int = 1
) -> dict[str, Any]:
    """Time every path at every size; returns per-size milliseconds and speed-up ratios."""
    import torch
    from PIL import Image

    from predictor.preprocess import PreprocessSpec, decode_image

    torch.set_num_threads(threads)
    spec = PreprocessSpec.from_model_dir(model_dir)
    procs = _processors(model_dir)
    max_pixels = 10**9

    def ours(data: bytes) -> object:
        return decode_image(data, spec, max_pixels)

    def ours_norm(data: bytes) -> object:
        return spec.normalize(decode_image(data, spec, max_pixels)[None])

    def theirs(proc: Any) -> Callable[[bytes], object]:
        tensors = _tensor_kind(proc)

        def fn(data: bytes) -> object:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            return proc(images=img, return_tensors=tensors)["pixel_values"]

        return fn

    def pil_decode_only(data: bytes) -> object:
        return Image.open(io.BytesIO(data)).convert("RGB")

    fns = {"ours": ours, "ours_with_normalize": ours_norm, "pil_full_decode": pil_decode_only}
    fns.update({name: theirs(proc) for name, proc in procs.items()})
    default = next(iter(procs))
    rows = []
    for w, h in sizes:
        images = list(sample_jpegs((w, h)))
        row: dict[str, Any] = {"size": f"{w}x{h}", "jpeg_kib": round(sum(map(len, images)) / len(images) / 1024, 1)}
        times = time_interleaved_ms(fns, images, min_time_s)
        row.update({f"{name}_ms": round(statistics.median(t), 3) for name, t in times.items()})
        row["rounds"] = len(times["ours"])
        row["speedup_vs_hf_default"] = _paired_speedup(times[default], times["ours"])
        row["speedup_with_normalize_vs_hf_default"] = _paired_speedup(times[default], times["ours_with_normalize"])
        row["speedup_vs_fastest_hf"] = min(_paired_speedup(times[n], times["ours"]) for n in procs)
        # Anyone who decodes at full size pays at least this: the bound on a speed-up without DCT scaling.
        row["bound_full_decode_vs_hf_default"] = _paired_speedup(times[default], times["pil_full_decode"])
        rows.append(row)
    return {
        "model_dir": str(model_dir),
        "threads": threads,
        "spec": {"crop_hw": list(spec.crop_hw), "resize_shortest_edge": spec.resize_shortest_edge},
        "processors": {n: type(p).__name__ for n, p in procs.items()},
        "note": "sample photos upscaled to each size: smoother than real photos of that size; speed-ups are "
        "medians of per-round ratios (paths interleaved); 'PIL full decode' is decode + RGB alone, the "
        "floor for any path that decodes at full size",
        "rows": rows,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The probe result as a markdown table (ms per image, speed-ups)."""
    names = list(result["processors"])
    head = ["size", "JPEG KiB", "ours ms", "ours+norm ms", "PIL full decode ms", *[f"{n} ms" for n in names],
            "speed-up", "speed-up (+norm)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["size"], r["jpeg_kib"], r["ours_ms"], r["ours_with_normalize_ms"], r["pil_full_decode_ms"]]
        cells += [r[f"{n}_ms"] for n in names]
        cells += [f"{r['speedup_vs_hf_default']}x", f"{r['speedup_with_normalize_vs_hf_default']}x"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the markdown table on stderr and the JSON on stdout (or to ``--out``)."""
    p = argparse.ArgumentParser(prog="python -m bench.preprocess_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, required=True)
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="comma-separated WIDTHxHEIGHT")
    p.add_argument("--min_time_s", type=float, default=1.0, help="least time measured per path and size")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fast processors use torch)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    result = run_probe(a.model_dir, [parse_size(s) for s in a.sizes.split(",")], a.min_time_s, a.threads)
    result["markdown"] = markdown_table(result)
    print(result["markdown"], file=sys.stderr)
    text = json.dumps(result, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
