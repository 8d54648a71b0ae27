"""One simulation's inputs put together: the chart's plan, the pod model, prices and assumptions.

:class:`SimSetup` derives what both engines need (the pod's resource request, the instance types
Karpenter may pick and how many pods fit on each, the capacity type, NodePool limits, consolidation,
storage-initializer time) and collects the notes the report prints about what was assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from classifier_plan.assumptions import Assumptions
from classifier_plan.capacity import CapacityProfile, PodModel
from classifier_plan.chart import ChartPlan
from classifier_plan.errors import PlanInputError
from classifier_plan.prices import PriceBook
from predictor.batching import BATCH_SHARE_OF_BUDGET

CLUSTER_AUTOSCALER_SCALE_DOWN_S = 600.0
"""Without a NodePool the report assumes a node autoscaler removing empty nodes after 10 minutes
(cluster-autoscaler's scale-down-unneeded-time default)."""
_LIMIT_KEYS = {"cpu": "cpu", "memory": "memory"}


@dataclass
class SimSetup:
    """Everything fixed for one run."""

    plan: ChartPlan
    profile: CapacityProfile
    prices: PriceBook
    assumptions: Assumptions
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        pod = self.plan.pod
        self.pod_request = [float(pod.gpus), pod.cpu_request, pod.memory_request]
        np_ = self.plan.nodepool
        if np_ is not None:
            self.capacity_type = "spot" if "spot" in np_.capacity_types else "on-demand"
            self.consolidate_after_s = np_.consolidate_after_s
            self.limits = {_LIMIT_KEYS.get(k, "gpu" if k.endswith("/gpu") else k): v for k, v in np_.limits}
            self.limits = {k: v for k, v in self.limits.items() if k in ("cpu", "memory", "gpu")}
            b = np_.budget_nodes.strip()
            self.budget_fraction = float(b[:-1]) / 100.0 if b.endswith("%") else -float(b)
        else:
            self.capacity_type = self.assumptions.default_capacity_type
            self.consolidate_after_s = CLUSTER_AUTOSCALER_SCALE_DOWN_S
            self.limits = {}
            self.budget_fraction = 1.0
            self.notes.append(
                f"no NodePool rendered: nodes assumed {self.capacity_type}, launched like Karpenter's and removed "
                f"{CLUSTER_AUTOSCALER_SCALE_DOWN_S:.0f} s after they empty (cluster-autoscaler's default)"
            )
        self.candidates, self.pods_per_node = self._candidates()
        model_bytes = self.assumptions.model_bytes
        if model_bytes is None:
            model_bytes = int(self.profile.model.get("bytes", 0))
        self.model_bytes = model_bytes
        self.storage_init_s = 0.0
        if pod.storage_uri:
            self.storage_init_s = self.assumptions.storage_init_overhead_s + model_bytes / (
                self.assumptions.model_download_mb_per_s * 1e6
            )
        self._check_profile()

    @property
    def pod_model(self) -> PodModel:
        return self.profile.pod_model

    @property
    def batch_cap(self) -> int:
        """The most images one forward pass holds: ``max_batch_size``, or fewer where a pass of that many
        would take more than an eighth of the queue-wait budget (the server's ``LatencyCap``: the time per
        image at the current cap sets the next cap, until it settles)."""
        st, pm = self.plan.settings, self.pod_model
        share_s = st.queue_wait_budget_s * BATCH_SHARE_OF_BUDGET
        n = st.max_batch_size
        for _ in range(32):
            nxt = max(1, min(st.max_batch_size, int(share_s * 1000.0 * n / pm.batch_ms(n))))
            if nxt == n:
                break
            n = nxt
        return n

    def capacity(self, images_per_request: float = 1.0) -> float:
        """Saturated img/s of one pod: full batches of :attr:`batch_cap` (or what its front end allows)."""
        return self.pod_model.capacity(self.batch_cap, images_per_request)

    def queue_limit_images(self, images_per_request: float = 1.0) -> float:
        """The most images a pod holds admitted: ``max_queue_images``, and no more than it drains within the
        queue-wait budget at its saturated rate (the server admits by that expected wait; its drain rate
        under a full queue is the saturated one)."""
        st = self.plan.settings
        return min(float(st.max_queue_images), self.capacity(images_per_request) * st.queue_wait_budget_s)

    def price_of(self, itype: str, discount: str = "typical") -> float:
        return self.prices.instances[itype].price(self.capacity_type, discount)

    def interruption_rate_per_s(self, itype: str) -> float:
        """Spot reclaims per node-second."""
        per_hour = self.assumptions.spot_interruptions_per_node_hour
        if per_hour is None:
            per_hour = self.prices.instances[itype].interruptions_per_month / self.prices.hours_per_month
        return per_hour / 3600.0

    def _fit(self, itype: str) -> int:
        it = self.prices.instances[itype]
        cpu, mem = it.allocatable(self.assumptions.daemonset_cpu, self.assumptions.daemonset_memory_gib)
        gpus, cpu_req, mem_req = self.pod_request
        fits = [max(0, it.max_pods - 6)]  # kube-proxy, CNI, device plugin, exporters take pod slots too
        if gpus:
            fits.append(int(it.gpus // gpus))
        if cpu_req:
            fits.append(math.floor(cpu / cpu_req + 1e-9))
        if mem_req:
            fits.append(math.floor(mem / mem_req + 1e-9))
        return max(0, min(fits))

    def _candidates(self) -> tuple[list[str], dict[str, int]]:
        a, np_, book = self.assumptions, self.plan.nodepool, self.prices.instances
        if a.instance_type:
            if a.instance_type not in book:
                raise PlanInputError(
                    "--assume", "instance_type", f"{a.instance_type!r} is not in the price file ({', '.join(book)})"
                )
            names = [a.instance_type]
        elif np_ is not None:
            names = [n for n in book if (not np_.families or n.split(".")[0] in np_.families)]
            names = [n for n in names if not np_.instance_types or n in np_.instance_types]
        else:
            names = [n for n in book if (book[n].gpus > 0) == (self.plan.pod.gpus > 0)]
        gpu = self.profile.gpu.name if self.profile.gpu else None
        if gpu and self.plan.pod.gpus and any(book[n].gpu == gpu for n in names):
            names = [n for n in names if book[n].gpu == gpu]
        fits = {n: self._fit(n) for n in names}
        names = [n for n in names if fits[n] >= 1]
        if not names:
            g, c, m = self.pod_request
            raise PlanInputError(
                "values",
                "resources.requests",
                f"no instance type allowed (NodePool families / price file) fits one pod needing {g:g} GPU, "
                f"{c:g} cores, {m / 2**30:.1f} GiB after node overhead",
            )
        return names, {n: fits[n] for n in names}

    def _check_profile(self) -> None:
        pod, prof = self.plan.pod, self.profile
        if pod.gpus and prof.gpu is None:
            self.notes.append(
                f"the chart gives each pod {pod.gpus} GPU but the capacity profile was measured without one "
                f"({prof.label}): pods are simulated at the profile's speed"
            )
        if not pod.gpus and prof.gpu is not None:
            self.notes.append(f"the chart's pods have no GPU but the capacity profile is for {prof.gpu.name}")
        if prof.kind == "estimate":
            self.notes.append(f"the capacity profile is an ESTIMATE ({prof.source}): measure it with bench/capacity.py")
        if not prof.trusted:
            self.notes.append(
                "the capacity profile is UNTRUSTED (measured while other tenants kept the machine busy: "
                + "; ".join(prof.untrusted_reasons)
                + "): every figure here may be off by the share of the CPU they took"
            )
        measured = int(prof.settings.get("max_batch_size", self.pod_model.measured_max_batch_size))
        if self.plan.settings.max_batch_size > self.pod_model.batch_time_ms[-1][0] * 1.5:
            self.notes.append(
                f"max_batch_size {self.plan.settings.max_batch_size} is beyond the measured batches "
                f"(up to {self.pod_model.batch_time_ms[-1][0]:.0f} at max_batch_size {measured}): forward time "
                "extrapolated linearly"
            )
