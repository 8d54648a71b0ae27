"""Traffic profiles: a YAML file of rate segments, turned into a rate per second and arrival times.

A profile (see ``docs/traffic/*.yaml``)::

    name: spike
    duration: 20m
    arrivals: poisson            # or uniform: evenly spaced, like `bench.loadgen --rate`
    images_per_request: 1        # or weights, e.g. {1: 0.9, 8: 0.1}
    segments:                    # applied in order; each sets or adds a rate (requests per minute)
      - {kind: points, points: [[0, 3], [20m, 3]]}          # piecewise linear (or interpolation: step)
      - {kind: spike, at: 5m, duration: 3m, rate_per_min: 120, ramp: 30s}
      - {kind: diurnal, mean_per_min: 300, amplitude_per_min: 250, peak_at: 14h}
      - {kind: idle, from: 2h, to: 6h, every: 24h}          # forces zero

Rates are requests per minute in the file (the unit the seed's scenarios use) and per second inside.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from classifier_plan.errors import load_yaml_model
from classifier_plan.units import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PointsSegment(_Segment):
    """A piecewise rate through ``[time, req/min]`` points; held flat before the first and after the last."""

    kind: Literal["points"]
    points: list[tuple[Seconds, Rate]] = Field(min_length=1)
    interpolation: Literal["linear", "step"] = "linear"
    mode: Literal["set", "add"] = "set"

    @field_validator("points")
    @classmethod
    def _times_increase(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        times = [t for t, _ in v]
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ValueError(f"point times must not decrease, got {times}")
        return v

    def apply(self, t: np.ndarray, base: np.ndarray) -> np.ndarray:
        times = np.array([p[0] for p in self.points])
        rates = np.array([p[1] for p in self.points]) / 60.0
        if self.interpolation == "linear":
            r = np.interp(t, times, rates)
        else:
            r = rates[np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(rates) - 1)]
        return r if self.mode == "set" else base + r


class DiurnalSegment(_Segment):
    """``mean + amplitude * cos(2 pi (t - peak_at) / period)`` requests per minute, never below zero."""

    kind: Literal["diurnal"]
    mean_per_min: Rate
    amplitude_per_min: Rate
    peak_at: Seconds = 14 * 3600.0
    period: Seconds = 86400.0
    mode: Literal["set", "add"] = "add"

    def apply(self, t: np.ndarray, base: np.ndarray) -> np.ndarray:
        phase = 2 * math.pi * (t - self.peak_at) / max(self.period, 1.0)
        r = np.maximum(0.0, self.mean_per_min + self.amplitude_per_min * np.cos(phase)) / 60.0
        return r if self.mode == "set" else base + r


class SpikeSegment(_Segment):
    """A burst of ``rate_per_min`` (added, or set) from ``at`` for ``duration``, reached linearly over ``ramp``."""

    kind: Literal["spike"]
    at: Seconds
    duration: Seconds
    rate_per_min: Rate
    ramp: Seconds = 0.0
    mode: Literal["set", "add"] = "add"

    def apply(self, t: np.ndarray, base: np.ndarray) -> np.ndarray:
        inside = (t >= self.at) & (t < self.at + self.duration)
        level = np.ones_like(t) if self.ramp <= 0 else np.clip((t - self.at) / self.ramp, 0.0, 1.0)
        rate = self.rate_per_min / 60.0
        if self.mode == "add":
            return base + np.where(inside, level * rate, 0.0)
        return np.where(inside, base + level * (rate - base), base)  # ramps from the rate underneath


class IdleSegment(_Segment):
    """No traffic from ``from`` to ``to`` (repeated ``every`` period when given)."""

    kind: Literal["idle"]
    from_: Seconds = Field(alias="from")
    to: Seconds
    every: Seconds | None = None

    def apply(self, t: np.ndarray, base: np.ndarray) -> np.ndarray:
        tt = np.mod(t, self.every) if self.every else t
        return np.where((tt >= self.from_) & (tt < self.to), 0.0, base)


Segment = Annotated[PointsSegment | DiurnalSegment | SpikeSegment | IdleSegment, Field(discriminator="kind")]


class TrafficProfile(BaseModel):
    """A traffic scenario: its length, how arrivals are spaced, images per request, the rate segments."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    duration: Seconds = Field(gt=0)
    arrivals: Literal["poisson", "uniform"] = "poisson"
    images_per_request: int | dict[int, float] = 1
    segments: list[Segment] = Field(min_length=1)
    seed: int = 0

    @field_validator("images_per_request")
    @classmethod
    def _images(cls, v: int | dict[int, float]) -> int | dict[int, float]:
        weights = {v: 1.0} if isinstance(v, int) else v
        if not weights or any(k < 1 for k in weights) or any(w < 0 for w in weights.values()):
            raise ValueError("images per request must be >= 1 and weights >= 0, e.g. 1 or {1: 0.9, 8: 0.1}")
        if sum(weights.values()) <= 0:
            raise ValueError("images_per_request weights must not all be zero")
        return v

    @property
    def image_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(image counts, probabilities)."""
        w = {self.images_per_request: 1.0} if isinstance(self.images_per_request, int) else self.images_per_request
        counts = np.array(sorted(w), dtype=np.int64)
        p = np.array([w[c] for c in counts], dtype=float)
        return counts, p / p.sum()

    @property
    def mean_images(self) -> float:
        counts, p = self.image_weights
        return float((counts * p).sum())

    def rate_per_s(self, t: np.ndarray) -> np.ndarray:
        """Requests per second at times ``t`` (seconds from the start)."""
        t = np.asarray(t, dtype=float)
        r = np.zeros_like(t)
        for seg in self.segments:
            r = seg.apply(t, r)
        return np.where((t >= 0) & (t < self.duration), np.maximum(r, 0.0), 0.0)

    def per_second(self) -> np.ndarray:
        """Rate (req/s) of each whole second, taken at mid-second: what arrivals are drawn from."""
        n = math.ceil(self.duration)
        return self.rate_per_s(np.arange(n) + 0.5)

    def expected_requests(self) -> float:
        return float(self.per_second().sum())

    def arrivals_chunks(self, chunk_s: int = 600) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Arrival times and image counts, in time order, ``chunk_s`` seconds at a time."""
        rng = np.random.default_rng(self.seed)
        rates = self.per_second()
        counts_values, p = self.image_weights
        carry = 0.0  # uniform arrivals: fraction of the next arrival accumulated so far
        for start in range(0, len(rates), chunk_s):
            r = rates[start : start + chunk_s]
            if self.arrivals == "poisson":
                n = rng.poisson(r)
                t = np.repeat(np.arange(start, start + len(r), dtype=float), n) + rng.random(int(n.sum()))
                t.sort()
            else:
                t, carry = _uniform(r, start, carry)
            images = (
                counts_values[rng.choice(len(p), size=len(t), p=p)] if len(p) > 1 else np.full(len(t), counts_values[0])
            )
            yield t, images


def _uniform(r: np.ndarray, start: int, carry: float) -> tuple[np.ndarray, float]:
    """Evenly spaced arrivals at a piecewise-constant rate (the k-th where the cumulative rate crosses k)."""
    cum = carry + np.concatenate([[0.0], np.cumsum(r)])
    ks = np.arange(math.floor(cum[0]) + 1, math.floor(cum[-1] + 1e-9) + 1, dtype=float)
    sec = np.clip(np.searchsorted(cum, ks, side="left") - 1, 0, len(r) - 1)
    frac = np.where(r[sec] > 0, (ks - cum[sec]) / np.where(r[sec] > 0, r[sec], 1.0), 0.0)
    t = start + sec + np.clip(frac, 0.0, 1.0)
    return t, float(cum[-1] - math.floor(cum[-1] + 1e-9))


def load_traffic(path: str | Path) -> TrafficProfile:
    """Read and validate a traffic profile.

    Raises:
        PlanInputError: missing or unreadable file, unknown keys, negative rates, bad durations.
    """
    return load_yaml_model(
        Path(path), TrafficProfile, "traffic profile", "a traffic profile is a mapping with name, duration and segments"
    )
