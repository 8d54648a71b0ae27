"""Which way of running the served precision is fastest on *this* machine: measured once, cached.

``backend=auto`` (or ``openvino_hint=auto``) on the CPU does not trust a fixed speed table: after ready,
in the background (as the precision check does), every way to run the precision being served that keeps
the answers is timed, and the fastest replaces the engine serving now if it beats it by
:data:`MARGIN`. The ways (:func:`candidates`): for fp32 every CPU backend (fp32 is the reference every
backend matches), OpenVINO with each performance hint; for a reduced precision only the backend the
precision check verified, with each hint.

The measurement copies what serving does: batches of :func:`measure_batch` images through each
engine's ``infer`` on the inference thread, and while each batch runs the decode pool decodes as many
images (``background_work``), so a backend that suffers from other threads on its cores (a two-core
machine, a forward pass with a barrier per layer) shows it. Candidates alternate over :data:`ROUNDS`
rounds, so serving traffic or a neighbour that disturbs one round disturbs all of them; the score is
the median of each candidate's per-round img/s. The verdict is cached beside the precision verdict,
keyed by the model, the candidates, the runtimes' versions, the CPU and the thread count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from predictor.engine import registry
from predictor.engine.cache import read_verdict_file, write_verdict_file

if TYPE_CHECKING:
    from predictor.engine.base import Engine

logger = logging.getLogger(__name__)

ROUNDS = 3
SECONDS_PER_TURN = 0.6
"""Forward-pass time given to one candidate in one round (at least one batch)."""
MARGIN = 0.03
"""A candidate replaces the serving engine only if it is this much faster (measurement noise)."""
CHECK_VERSION = 1
HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True, order=True)
class Variant:
    """One way to serve: backend, precision and (OpenVINO only) performance hint."""

    backend: str
    precision: str
    openvino_hint: str = ""

    @property
    def label(self) -> str:
        """e.g. ``openvino fp32 THROUGHPUT``."""
        return " ".join(p for p in (self.backend, self.precision, self.openvino_hint) if p)

    @classmethod
    def parse(cls, label: str) -> Variant:
        """Inverse of :attr:`label`."""
        parts = label.split()
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")


def candidates(
    precision: str, backend: str, openvino_hint: str, checked_backend: str | None, openvino_ok: bool
) -> list[Variant]:
    """Every way to serve ``precision`` on the CPU that the settings allow and that keeps the answers.

    Args:
        precision: the precision served (``fp32``, or a reduced one the precision check passed).
        backend: the ``backend`` setting (``auto`` or one backend).
        openvino_hint: the ``openvino_hint`` setting (``auto`` or one hint).
        checked_backend: for a reduced precision, the backend whose answers the check verified.
        openvino_ok: whether OpenVINO is importable.
    """
    out = []
    for name in registry.backends_for("cpu"):
        if precision not in registry.precisions(name, "cpu") or backend not in ("auto", name):
            continue
        if precision != "fp32" and name != checked_backend:
            continue  # only the checked backend is known to keep the answers in reduced precision
        if name == "openvino":
            if not openvino_ok:
                continue
            out += [Variant(name, precision, h) for h in HINTS if openvino_hint in ("auto", h)]
        else:
            out.append(Variant(name, precision))
    return sorted(out)


def measure_batch(max_batch_size: int) -> int:
    """Batch size the candidates are timed with: what a loaded server forms, within ``max_batch_size``."""
    return max(1, min(8, max_batch_size))


@dataclass(frozen=True)
class SpeedVerdict:
    """Outcome of one speed check."""

    winner: str
    """The label of the fastest variant (the serving one when no other beat it by :data:`MARGIN`)."""
    img_per_s: dict[str, float]
    """Median img/s of every variant measured."""
    batch: int
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)
    """Variants that could not be loaded or run, and why."""

    def describe(self) -> str:
        """One line for the log."""
        rates = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.img_per_s.items(), key=lambda kv: -kv[1]))
        failed = f"; failed: {', '.join(f'{k} ({v})' for k, v in self.failed.items())}" if self.failed else ""
        best = max(self.img_per_s, key=self.img_per_s.__getitem__, default=self.winner)
        kept = ""
        if best != self.winner and self.winner in self.img_per_s:
            ahead = self.img_per_s[best] / self.img_per_s[self.winner] - 1
            kept = f"; {best} was {ahead:.1%} faster, under the {MARGIN:.0%} margin: the serving one stays"
        return f"fastest: {self.winner} (img/s at batch {self.batch}, with decoding alongside: {rates}){kept}{failed}"

    def to_json(self) -> str:
        """Serialised for the cache."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SpeedVerdict:
        """Parse :meth:`to_json` output."""
        return cls(**json.loads(text))


def verdict_path(
    cache_dir: Path, model_hash: str, variants: list[Variant], hardware: str, threads: int, batch: int
) -> Path:
    """Where the speed verdict for this model, candidate set, runtimes, CPU and threads is cached."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for dist in sorted({v.backend for v in variants}):
        try:
            versions.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist}=unknown")
    key = [model_hash, *(v.label for v in variants), *versions, hardware, str(threads), str(batch)]
    digest = hashlib.sha256("\0".join([*key, str(CHECK_VERSION)]).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"speed-{variants[0].precision}-{digest}.json"


def read_verdict(path: Path) -> SpeedVerdict | None:
    """A cached verdict, or None (absent or unreadable: measure again)."""
    return read_verdict_file(path, SpeedVerdict.from_json, "speed verdict", "measuring again")


def write_verdict(path: Path, verdict: SpeedVerdict) -> None:
    """Cache a verdict atomically; a read-only cache only logs."""
    write_verdict_file(path, verdict.to_json(), "speed verdict", "measures again")


Run = Callable[[Callable[[], float]], float]
BackgroundWork = Callable[[int], Callable[[], None]]
"""Starts ``n`` pieces of serving-like work (decodes) and returns a function that waits for them."""


def timed_rounds(
    engines: dict[str, Engine],
    batch: np.ndarray,
    run: Run,
    background_work: BackgroundWork | None = None,
    rounds: int = ROUNDS,
    seconds_per_turn: float = SECONDS_PER_TURN,
) -> dict[str, float]:
    """Median img/s of each engine on ``batch``, the engines alternating over ``rounds`` rounds.

    Each forward pass runs through ``run`` (on the inference thread) and is timed there; while it runs,
    ``background_work`` does as many decodes as the batch holds.
    """

    def one_pass(engine: Engine) -> float:
        t0 = time.perf_counter()
        engine.infer(batch)
        return time.perf_counter() - t0

    per_round: dict[str, list[float]] = {k: [] for k in engines}
    names = list(engines)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # a different one goes first each round
            images, busy = 0, 0.0
            while busy < seconds_per_turn or images == 0:
                join = background_work(len(batch)) if background_work is not None else None
                busy += run(lambda e=engines[name]: one_pass(e))
                images += len(batch)
                if join is not None:
                    join()
            per_round[name].append(images / busy)
    return {k: round(statistics.median(v), 2) for k, v in per_round.items()}


def pick(img_per_s: dict[str, float], serving: str, margin: float = MARGIN) -> str:
    """The fastest variant, unless it beats the serving one by less than ``margin``."""
    best = max(img_per_s, key=lambda k: img_per_s[k])
    if best != serving and serving in img_per_s and img_per_s[best] < img_per_s[serving] * (1 + margin):
        return serving
    return best


@dataclass
class PendingSpeedCheck:
    """A speed check of ``variants`` still to run (made by :func:`predictor.engine.loader.speed_check_for`)."""

    variants: list[Variant]
    path: Path
    """Where the verdict is cached."""
    batch_size: int
    input_hw: tuple[int, int]
    build: Callable[[Variant], Engine]
    """Builds (does not load) the engine of one variant."""

    def cached(self) -> SpeedVerdict | None:
        """The cached verdict, if one exists."""
        return read_verdict(self.path)

    def run(
        self, serving: Engine, serving_variant: Variant, run: Run, background_work: BackgroundWork | None = None
    ) -> tuple[SpeedVerdict, Variant, Engine | None]:
        """Measure (or read the cached verdict) and return it, the winner, and the winner's loaded engine
        when it is not the serving one (None otherwise).

        Candidates load in the calling thread; their warm-up and every timed pass go through ``run``.
        """
        verdict = self.cached()
        if verdict is not None:
            winner = Variant.parse(verdict.winner)
            if winner == serving_variant or winner not in self.variants:
                return verdict, serving_variant, None
            engine = self.build(winner)
            engine.load()
            return verdict, winner, engine
        started = time.monotonic()
        engines: dict[str, Engine] = {serving_variant.label: serving}
        failed: dict[str, str] = {}
        try:
            for v in self.variants:
                if v != serving_variant:
                    self._load(v, engines, failed, run)
            h, w = self.input_hw
            batch = np.random.default_rng(0).integers(0, 256, (self.batch_size, h, w, 3), dtype=np.uint8)
            rates = timed_rounds(engines, batch, run, background_work)
            winner = pick(rates, serving_variant.label)
        except BaseException:
            _close_all(engines, keep=serving_variant.label)
            raise
        _close_all(engines, keep={serving_variant.label, winner})
        verdict = SpeedVerdict(winner, rates, self.batch_size, round(time.monotonic() - started, 2), failed)
        write_verdict(self.path, verdict)
        return verdict, Variant.parse(winner), engines[winner] if winner != serving_variant.label else None

    def _load(self, v: Variant, engines: dict[str, Engine], failed: dict[str, str], run: Run) -> None:
        try:
            engine = self.build(v)
            engine.load()
            run(lambda: engine.warmup(sorted({1, self.batch_size})) or 0.0)
        except Exception as e:  # a shutdown is not an Exception: it goes through
            logger.warning("speed check: %s could not run here (%s); left out", v.label, e)
            failed[v.label] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            return
        engines[v.label] = engine


def _close_all(engines: dict[str, Engine], keep: str | set[str]) -> None:
    kept = {keep} if isinstance(keep, str) else keep
    for label, engine in engines.items():
        if label not in kept:
            engine.close()
