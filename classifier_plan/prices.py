"""Instance prices and shapes (``data/prices.yaml``, or the user's file via ``--prices``).

Allocatable capacity follows Karpenter's AWS provider: kube-reserved CPU (6 % of the first core, 1 % of
the second, 0.5 % of the next two, 0.25 % of the rest), kube-reserved memory ``11 MiB * max_pods +
255 MiB``, the 100 MiB eviction threshold and the 7.5 % VM memory overhead, minus the daemonsets' requests
(an assumption the report lists).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from classifier_plan.errors import load_yaml_model

DEFAULT_PRICES = Path(__file__).parent / "data" / "prices.yaml"
GIB = 2**30
MIB = 2**20


class SpotDiscount(BaseModel):
    """Spot price = on-demand x (1 - discount); ``low``/``high`` bound the cost range in reports."""

    model_config = ConfigDict(extra="forbid")
    typical: float = Field(ge=0, lt=1)
    low: float = Field(ge=0, lt=1)
    high: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> SpotDiscount:
        if not self.low <= self.typical <= self.high:
            raise ValueError(f"spot_discount needs low <= typical <= high, got {self.low}, {self.typical}, {self.high}")
        return self


class InstanceType(BaseModel):
    """One instance type: its shape and prices."""

    model_config = ConfigDict(extra="forbid")
    vcpu: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    gpus: int = Field(0, ge=0)
    gpu: str | None = None
    on_demand_usd_per_h: float = Field(gt=0)
    spot_discount: SpotDiscount
    interruptions_per_month: float = Field(0.05, ge=0, le=1)
    max_pods: int = Field(110, ge=1)

    def price(self, capacity_type: str, discount: str = "typical") -> float:
        """$/h for ``on-demand`` or ``spot`` (``discount``: typical, low or high)."""
        if capacity_type == "spot":
            return self.on_demand_usd_per_h * (1.0 - getattr(self.spot_discount, discount))
        return self.on_demand_usd_per_h

    def allocatable(self, daemonset_cpu: float, daemonset_memory_gib: float) -> tuple[float, float]:
        """(cores, bytes) a pod may request on this node (Karpenter's AWS overhead formulas)."""
        cores = self.vcpu
        reserved_m = 60 + (10 if cores > 1 else 0) + 5 * min(2, max(0, cores - 2)) + 2.5 * max(0, cores - 4)
        cpu = cores - reserved_m / 1000.0 - daemonset_cpu
        mem = self.memory_gib * GIB * (1 - 0.075) - (11 * self.max_pods + 255) * MIB - 100 * MIB
        return cpu, mem - daemonset_memory_gib * GIB


class PriceBook(BaseModel):
    """The whole price file."""

    model_config = ConfigDict(extra="forbid")
    source: str
    region: str
    date: str
    spot_source: str = ""
    hours_per_month: float = Field(730.0, gt=0)
    instances: dict[str, InstanceType] = Field(min_length=1)

    @property
    def family(self) -> dict[str, str]:
        return {name: name.split(".")[0] for name in self.instances}


def load_prices(path: str | Path | None = None) -> PriceBook:
    """The packaged price book, or the user's.

    Raises:
        PlanInputError: unreadable file, unknown keys, negative prices.
    """
    p = Path(path) if path else DEFAULT_PRICES
    return load_yaml_model(
        p, PriceBook, "price file", "a price file is a mapping with source, region, date and instances"
    )
