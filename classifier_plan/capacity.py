"""Capacity profiles: what one pod of the predictor does, measured (``bench/capacity.py``) or estimated.

A profile is ``capacity.json``: where and when it was measured, the model and engine, the settings it
ran with, the raw measurements, and the fitted :class:`PodModel` the simulator runs. Profiles shipped
with the package live in ``classifier_plan/data/capacity/`` and are named without ``.json``
(``--capacity cpu-epyc-2c-efficientnet-lite0``); GPU profiles there are estimates until measured.
"""

from __future__ import annotations

import itertools
import json
from bisect import bisect_left
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from classifier_plan.errors import PlanInputError, from_validation

DATA_DIR = Path(__file__).parent / "data" / "capacity"
POST_SHARE = 0.2
"""Share of the per-request overhead spent after the forward pass (top-k, response); the rest is before
it (parsing, decoding) and counts in the pod's queue depth, as ``classifier_queue_depth`` does."""


class PodModel(BaseModel):
    """One replica of the predictor as the simulator runs it.

    The forward pass runs batches one at a time (the batcher's one inference thread); everything else a
    request costs is ``overhead_ms``. With ``cpu_shared`` (a CPU-only pod) that overhead shares the cores
    with the forward pass, and its cost is already inside ``batch_time_ms`` (measured under load), so it
    is a pure delay. Without it (a GPU pod), the event loop (``frontend_ms_per_request``) and the decode
    pool (``decode_threads`` x ``decode_ms_per_image``) are their own servers and can be the bottleneck.
    """

    model_config = ConfigDict(extra="forbid")

    batch_time_ms: list[tuple[float, float]] = Field(
        min_length=1, description="(batch size, ms of one forward pass) points, sizes increasing"
    )
    overhead_ms: float = Field(ge=0, description="per-request time outside the batcher and the forward pass")
    overhead_jitter_ms: float = Field(
        0.0, ge=0, description="mean of an exponential part of the overhead (it varies request to request) at no load"
    )
    jitter_per_utilization_ms: float = Field(
        0.0, ge=0, description="growth of that mean per unit of the pod's utilisation (cores contended)"
    )
    cpu_shared: bool = Field(True, description="HTTP and decoding share the cores with the forward pass")
    frontend_ms_per_request: float = Field(0.0, ge=0, description="event-loop CPU per request (not shared)")
    decode_ms_per_image: float = Field(0.0, ge=0, description="decode time per image in the pool (not shared)")
    decode_threads: int = Field(1, ge=1, description="decode pool size (not shared)")
    cpu_ms_per_image: float = Field(ge=0, description="server CPU per image, for a CPU-utilisation metric")
    idle_cpu_cores: float = Field(0.02, ge=0, description="CPU an idle pod uses")
    cold_start_s: float = Field(ge=0, description="process start to ready with an empty cache (a fresh pod)")
    capacity_img_per_s: float = Field(gt=0, description="saturated throughput at the measured max_batch_size")
    measured_max_batch_size: int = Field(ge=1, description="max_batch_size the profile was measured with")

    @model_validator(mode="after")
    def _sizes_increase(self) -> PodModel:
        sizes = [n for n, _ in self.batch_time_ms]
        if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] <= 0:
            raise ValueError(f"batch_time_ms sizes must be positive and increasing, got {sizes}")
        if any(ms <= 0 for _, ms in self.batch_time_ms):
            raise ValueError("batch_time_ms times must be > 0")
        return self

    def batch_ms(self, n: int) -> float:
        """Forward time of a batch of ``n`` images: linear between points, the last slope past them."""
        pts = self.batch_time_ms
        if len(pts) == 1:
            n0, t0 = pts[0]
            return t0 * max(n, 1) / n0 if n > n0 else t0
        sizes = [p[0] for p in pts]
        i = bisect_left(sizes, n)
        if i == 0:
            return pts[0][1]
        if i >= len(pts):
            (n0, t0), (n1, t1) = pts[-2], pts[-1]
        else:
            (n0, t0), (n1, t1) = pts[i - 1], pts[i]
        return max(1e-3, t0 + (t1 - t0) * (n - n0) / (n1 - n0))

    def throughput(self, max_batch_size: int) -> float:
        """Saturated img/s of the forward pass: full batches of ``max_batch_size`` back to back (what an
        overloaded pod does: its queue is full, so every batch is)."""
        return max_batch_size / self.batch_ms(max_batch_size) * 1000.0

    def frontend_img_per_s(self, images_per_request: float) -> float:
        """img/s the event loop and the decode pool allow (infinite for a cpu-shared pod)."""
        if self.cpu_shared:
            return float("inf")
        caps = [float("inf")]
        if self.frontend_ms_per_request > 0:
            caps.append(1000.0 * images_per_request / self.frontend_ms_per_request)
        if self.decode_ms_per_image > 0:
            caps.append(1000.0 * self.decode_threads / self.decode_ms_per_image)
        return min(caps)

    def capacity(self, max_batch_size: int, images_per_request: float = 1.0) -> float:
        """Saturated img/s of one pod with these settings."""
        return min(self.throughput(max_batch_size), self.frontend_img_per_s(images_per_request))


class GpuInfo(BaseModel):
    """The accelerator a profile was measured (or estimated) on."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="e.g. L4, A10G, T4, H200")
    count: int = Field(1, ge=1)


class CapacityProfile(BaseModel):
    """``capacity.json``: provenance, settings and the pod model."""

    model_config = ConfigDict(extra="forbid")
    schema_: int = Field(1, alias="schema")
    kind: Literal["measured", "estimate"]
    source: str = Field(min_length=1, description="how the numbers were obtained")
    date: str
    command: str = ""
    machine: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any]
    gpu: GpuInfo | None = None
    settings: dict[str, Any]
    payload: dict[str, Any] = Field(default_factory=dict)
    measurements: dict[str, Any] = Field(default_factory=dict)
    pod_model: PodModel
    trusted: bool = Field(
        True, description="false: measured while other tenants kept the machine busy (bench.capacity --allow_busy)"
    )
    untrusted_reasons: list[str] = Field(default_factory=list, description="the points that were disturbed")

    @property
    def label(self) -> str:
        """One line for reports: kind, model, machine, date."""
        where = self.gpu.name if self.gpu else self.machine.get("cpu_model", "CPU")
        cores = self.machine.get("usable_cores")
        where += f", {cores} cores" if cores and not self.gpu else ""
        return f"{self.kind}: {self.model.get('name', '?')} on {where} ({self.date[:10]})"


def load_capacity(spec: str | Path) -> CapacityProfile:
    """A profile from a path, or a packaged profile by name (``classifier_plan/data/capacity/NAME.json``).

    Raises:
        PlanInputError: missing file, not JSON, or not a valid profile.
    """
    path = Path(spec)
    if not path.exists() and (DATA_DIR / f"{spec}.json").exists():
        path = DATA_DIR / f"{spec}.json"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in DATA_DIR.glob("*.json")))
        raise PlanInputError(
            f"--capacity {spec}", "", f"no such file; run `make bench-capacity` or name a packaged profile ({names})"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PlanInputError(str(path), "", f"not a JSON capacity profile: {e}") from None
    try:
        return CapacityProfile.model_validate(data)
    except ValidationError as e:
        raise from_validation(str(path), e, CapacityProfile) from None


def _batch_points(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(mean batch size, mean forward ms) of the load points: sizes merged when within 5 %, times monotone."""
    pts = sorted(
        (p["server"]["mean_batch_size"], p["server"]["mean_forward_ms"])
        for p in points
        if p["server"]["mean_batch_size"] and p["server"]["mean_forward_ms"]
    )
    merged: list[list[float]] = []
    for n, ms in pts:
        if merged and n <= merged[-1][0] * 1.05:
            merged[-1] = [max(merged[-1][0], n), max(merged[-1][1], ms)]
        else:
            merged.append([n, ms])
    out: list[tuple[float, float]] = []
    for n, ms in merged:  # a bigger batch never takes less time than a smaller one
        out.append((round(n, 3), round(max(ms, out[-1][1] if out else ms), 3)))
    return out


def _fit_jitter(points: list[dict[str, Any]]) -> tuple[float, float]:
    """Spread of the overhead against load: an exponential part of mean ``a + b * u``, with ``u`` the point's
    img/s over the saturated throughput, fitted on the points below the knee (no 503s, batches under 4).

    For an exponential, p95 - p50 = ln(20) - ln(2) = 2.30 times its mean.
    """
    import numpy as np

    top = max(p["img_per_s"] for p in points) or 1.0
    xs, ys = [], []
    for p in points:
        lat = p.get("latency_ms", {})
        if (
            lat.get("p95")
            and lat.get("p50")
            and not p.get("rejected_503_share")
            and (p["server"]["mean_batch_size"] or 0) < 4
        ):
            xs.append(p["img_per_s"] / top)
            ys.append(max(0.0, (lat["p95"] - lat["p50"]) / 2.30))
    if not xs:
        return 0.0, 0.0
    if len(xs) == 1:
        return ys[0], 0.0
    b, a = np.polyfit(np.array(xs), np.array(ys), 1)
    return max(0.0, float(a)), max(0.0, float(b))


def fit_pod_model(profile: dict[str, Any]) -> PodModel:
    """The pod model of a measured profile (``bench/capacity.py``'s output, before ``pod_model`` is set).

    Fitted on the open-loop points (independent arrivals, as production traffic is; a closed loop's
    clients all send right after a batch returns, which hides how decoding overlaps the forward pass):
    the forward time of a batch is the server's own mean forward time against its mean batch size at each
    offered rate, overload included (contention with decoding and rejections included); the overhead is
    the lightest point's mean latency minus its batcher wait and forward time, and its spread
    (``overhead_jitter_ms``, an exponential part) comes from that point's p95 - p50.
    """
    m = profile["measurements"]
    points = sorted(m.get("open_loop") or m["closed_loop"], key=lambda p: p.get("rate_per_s", p.get("concurrency", 0)))
    light = points[0]
    s = light["server"]
    overhead = max(0.0, light["mean_latency_ms"] - (s["mean_batcher_wait_ms"] or 0.0) - (s["mean_forward_ms"] or 0.0))
    jitter0, jitter1 = _fit_jitter(points)
    jitter = min(overhead, jitter0)
    cpu = [p["server_cpu_ms_per_image"] for p in points if p["server_cpu_ms_per_image"]]
    cpu_ms = sorted(cpu)[len(cpu) // 2] if cpu else 0.0
    max_batch = int(profile["settings"]["max_batch_size"])
    shared = profile.get("gpu") is None
    decode_ms = float(s.get("mean_decode_ms") or 0.0)
    model = PodModel(
        batch_time_ms=_batch_points(points),
        overhead_ms=round(overhead, 3),
        overhead_jitter_ms=round(jitter, 3),
        jitter_per_utilization_ms=round(jitter1, 3),
        cpu_shared=shared,
        # On a GPU the event loop and the decode pool are the CPU's work: their own servers.
        frontend_ms_per_request=0.0 if shared else round(max(0.0, cpu_ms - decode_ms), 3),
        decode_ms_per_image=round(decode_ms, 3),
        decode_threads=max(1, int(profile.get("machine", {}).get("usable_cores") or 1)),
        cpu_ms_per_image=round(cpu_ms, 3),
        cold_start_s=m["cold_start_s"]["first"],
        capacity_img_per_s=1.0,
        measured_max_batch_size=max_batch,
    )
    return model.model_copy(update={"capacity_img_per_s": round(model.throughput(max_batch), 2)})
