"""The autoscaling control loop: metrics in, replica counts out, on each autoscaler's own clock.

Knative (KPA): the revision's concurrency (or request rate) is recorded every second, the decider
runs every 2 s, and the activator's buffered requests wake a revision at zero at once. Standard mode:
Prometheus scrapes every pod each scrape interval (the PodMonitor's); the HPA syncs every 15 s on those
samples (KEDA's external metrics are the chart's PromQL query evaluated over them; CPU is the pod's
usage over the interval against its request); KEDA itself polls every ``pollingInterval`` for
activation and cooldown. The KEDA HTTP add-on's ScaledObject works the same way on the add-on scaler's
count at the interceptor (:mod:`classifier_plan.httpaddon`), which exists while no pod does, and whose
activity KEDA acts on at once (it is pushed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from classifier_plan import hpa as hpa_mod
from classifier_plan.chart import HpaMetric
from classifier_plan.cluster import Cluster, Pod
from classifier_plan.httpaddon import InterceptorCounts
from classifier_plan.keda import KedaLoop
from classifier_plan.kpa import Kpa, KpaConfig, KpaScaler, revision_target
from classifier_plan.setup import SimSetup


@dataclass
class PodSample:
    """What a scrape reads from one pod, over the interval since the previous scrape."""

    queue_depth: float
    inflight: float
    busy_s: float
    images: float
    dt: float


class Signals(Protocol):
    """What an engine measures for the autoscalers."""

    def concurrency(self) -> float:
        """Average in-flight requests (pods and activator) over the last second."""
        ...

    def arrivals(self) -> float:
        """Requests that arrived in the last second."""
        ...

    def waiting_at_activator(self) -> int: ...

    def scrape(self, pod: Pod, now: float) -> PodSample: ...


class Controller:
    """Runs the chart's autoscaler against the cluster."""

    def __init__(self, setup: SimSetup, cluster: Cluster, signals: Signals) -> None:
        self.s, self.cluster, self.signals = setup, cluster, signals
        plan, a = setup.plan, setup.assumptions
        self.kind = plan.autoscaler
        self.next_decide = 0.0
        self.next_scrape = 0.0
        self.next_sync = a.hpa_sync_s
        self.samples: dict[int, PodSample] = {}
        self.in_panic = False
        self.kpa: Kpa | None = None
        self.hpa: hpa_mod.Hpa | None = None
        self.keda: KedaLoop | None = None
        self.interceptor = InterceptorCounts(plan.http_addon) if plan.http_addon else None
        if self.kind == "kpa":
            self._init_kpa()
        elif self.kind in ("hpa", "keda", "httpAddon"):
            self._init_hpa()
        self.scrape_s = a.scrape_interval_s or plan.scrape_interval_s or 15.0

    def _init_kpa(self) -> None:
        kn, a, plan = self.s.plan.knative, self.s.assumptions, self.s.plan
        assert kn is not None
        target = revision_target(kn, a)
        cfg = KpaConfig(
            target=target,
            stable_window_s=kn.window_s or a.knative_stable_window_s,
            panic_window_pct=kn.panic_window_pct or a.knative_panic_window_pct,
            panic_threshold_pct=kn.panic_threshold_pct or a.knative_panic_threshold_pct,
            max_scale_up_rate=a.knative_max_scale_up_rate,
            max_scale_down_rate=a.knative_max_scale_down_rate,
            scale_down_delay_s=kn.scale_down_delay_s,
            activation_scale=kn.activation_scale or 0,
        )
        self.kpa = Kpa(cfg)
        self.scaler = KpaScaler(plan.min_replicas, plan.max_replicas, a.knative_scale_to_zero_grace_s)
        note = (
            'initial-scale 0 needs `allow-zero-initial-scale: "true"` in Knative\'s config-autoscaler; without it '
            f"Knative starts the revision with {a.knative_initial_scale} (simulated so; "
            "`--assume knative_allow_zero_initial_scale=true` where your cluster has the flag)"
        )
        if kn.initial_scale == 0 and not a.knative_allow_zero_initial_scale and note not in self.s.notes:
            self.s.notes.append(note)

    def _init_hpa(self) -> None:
        plan = self.s.plan
        if self.kind in ("keda", "httpAddon"):
            assert plan.keda is not None
            k = plan.keda
            self.keda = KedaLoop(plan.min_replicas, k.polling_s, k.cooldown_s, k.activation_threshold)
            # Neither KServe's ScaledObject nor the HTTP add-on's sets advanced.horizontalPodAutoscalerConfig:
            # KEDA's HPA has no behavior.
            self.hpa = hpa_mod.Hpa(self.keda.hpa_min, plan.max_replicas, up=None, down=None)
        else:
            # KServe's own HPA carries an empty behavior: the API server fills in the default rules.
            self.hpa = hpa_mod.Hpa(max(1, plan.min_replicas), plan.max_replicas)

    def initial_replicas(self) -> int:
        """Pods running when the simulation starts (the deployed steady state)."""
        plan, a = self.s.plan, self.s.assumptions
        if self.kind == "kpa":
            kn = plan.knative
            initial = a.knative_initial_scale
            # GetInitialScale: the revision's initial-scale, except 0 where allow-zero-initial-scale is off.
            if kn and kn.initial_scale is not None and (kn.initial_scale > 0 or a.knative_allow_zero_initial_scale):
                initial = kn.initial_scale
            return max(plan.min_replicas, initial)
        return max(plan.min_replicas, 1)

    def tick(self, now: float) -> None:
        """One second of the control plane."""
        if self.kind == "none":
            return  # fixed replicas (autoscalerClass none, or a fixed-pod run)
        if self.kpa is not None:
            self._tick_kpa(now)
            return
        if self.interceptor is not None:
            self.interceptor.record(now, self.signals.arrivals(), self.signals.concurrency())
        if now + 1e-9 >= self.next_scrape:
            self.next_scrape = now + self.scrape_s
            self.samples = {p.id: self.signals.scrape(p, now) for p in self.cluster.ready_pods()}
        if self.keda is not None:
            self._tick_keda(now)
        if self.hpa is not None and now + 1e-9 >= self.next_sync:
            self.next_sync = now + self.s.assumptions.hpa_sync_s
            self._sync_hpa(now)

    def _tick_keda(self, now: float) -> None:
        """KEDA's poll of the triggers every ``pollingInterval``; the HTTP add-on's scaler also pushes its
        activity (an ``external-push`` trigger), which KEDA acts on at once: a wake, and the last active time
        its cooldown counts from."""
        assert self.keda is not None
        due = self.keda.due(now)
        if not due and self.interceptor is None:
            return
        values = [self._value(m) for m in self.s.plan.hpa_metrics]
        if not due and not any(v > self.keda.activation_threshold for v in values):
            return  # the scaler pushes only activity; going idle is seen on the next poll
        n = self.keda.poll(now, values, self.cluster.replicas)
        if n is not None and n != self.cluster.replicas:
            self.cluster.set_replicas(now, n)

    def _tick_kpa(self, now: float) -> None:
        assert self.kpa is not None
        kn = self.s.plan.knative
        assert kn is not None
        value = self.signals.arrivals() if kn.metric == "rps" else self.signals.concurrency()
        self.kpa.record(now, value)
        waking = self.cluster.replicas == 0 and self.signals.waiting_at_activator() > 0
        if now + 1e-9 < self.next_decide and not waking:
            return
        self.next_decide = now + self.kpa.cfg.tick_s
        ready = len(self.cluster.ready_pods())
        desired = self.kpa.decide(now, ready)
        self.in_panic = self.kpa.in_panic
        if desired is None:
            return
        if waking:
            desired = max(desired, 1)
        n = self.scaler.apply(now, desired, self.cluster.replicas)
        if n != self.cluster.replicas:
            self.cluster.set_replicas(now, n)

    def _value(self, metric: HpaMetric) -> float:
        """The chart's PromQL aggregation over the latest scrape of the predictor's pods (0 when empty), or the
        HTTP add-on scaler's count at the interceptor (which exists while no pod does)."""
        if self.interceptor is not None and metric.signal.startswith("http_"):
            return self.interceptor.value()
        vals = [self._signal(metric.signal, s) for s in self.samples.values()]
        if not vals:
            return 0.0
        agg = {"avg": lambda v: sum(v) / len(v), "sum": sum, "max": max, "min": min}[metric.aggregation]
        return float(agg(vals))

    def _signal(self, signal: str, s: PodSample) -> float:
        if signal == "queue_depth":
            return s.queue_depth
        if signal == "inflight":
            return s.inflight
        if signal == "gpu_util":
            return 100.0 * min(1.0, s.busy_s / s.dt) if s.dt > 0 else 0.0
        return self._cpu_pct(s)

    def _cpu_pct(self, s: PodSample) -> float:
        pm, req = self.s.pod_model, self.s.plan.pod.cpu_request or 1.0
        cores = pm.idle_cpu_cores + (pm.cpu_ms_per_image * s.images / 1000.0 / s.dt if s.dt > 0 else 0.0)
        return 100.0 * cores / req

    def _sync_hpa(self, now: float) -> None:
        assert self.hpa is not None
        current = self.cluster.replicas
        tol = self.s.assumptions.hpa_tolerance
        proposals = []
        for m in self.s.plan.hpa_metrics:
            if m.signal in ("cpu", "memory"):
                if m.signal == "memory":
                    continue  # memory does not follow load in this model
                utils = [self._cpu_pct(s) for s in self.samples.values()]
                unready = self.cluster.count("starting")
                proposals.append(hpa_mod.resource_replicas(current, utils, unready, m.target, tol))
            elif m.target_type == "Value":
                ready = len(self.samples)
                proposals.append(hpa_mod.external_value(current, ready, self._value(m), m.target, tol))
            else:
                proposals.append(hpa_mod.external_average_value(current, self._value(m), m.target, tol))
        if not proposals:
            return
        n = self.hpa.sync(now, current, max(proposals))
        if n != current:
            self.cluster.set_replicas(now, n)
