"""The rendered objects read into a :class:`~classifier_plan.chart.spec.ChartPlan` (never the values' key names).

Deployment mode, autoscaler and its settings (the InferenceService's fields and annotations, KServe's
defaults for what it creates: HPA or KEDA ScaledObject; or the ScaledObject and interceptor a KEDA HTTP add-on
HTTPScaledObject makes), the predictor's own settings (the
``kserve-container`` args, parsed exactly as the server parses them), resources, probes, drain times, the
Karpenter NodePool and the scrape interval.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from classifier_plan.chart.render import parse_objects, render
from classifier_plan.chart.spec import (
    ChartPlan,
    HpaMetric,
    HttpAddonScaling,
    KedaScaling,
    KnativeScaling,
    NodePoolSpec,
    PodSpec,
    PredictorSettings,
)
from classifier_plan.errors import PlanInputError
from classifier_plan.units import parse_duration, parse_quantity

KNATIVE_PREFIX = "autoscaling.knative.dev/"
_SIGNALS = {"classifier_queue_depth": "queue_depth", "classifier_inflight_requests": "inflight"}
_SIGNALS_GPU = "DCGM_FI_DEV_GPU_UTIL"
_QUERY = re.compile(r"^\s*(avg|sum|max|min)\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*\{")


def _predictor_isvc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    isvcs = [o for o in objects if o.get("kind") == "InferenceService"]
    if len(isvcs) != 1:
        raise PlanInputError("helm template", "", f"expected one InferenceService in the chart, found {len(isvcs)}")
    return isvcs[0]


def _container(predictor: dict[str, Any]) -> dict[str, Any]:
    for c in predictor.get("containers", []):
        if c.get("name") == "kserve-container":
            return c
    raise PlanInputError("helm template", "spec.predictor.containers", "no container named kserve-container")


def read_settings(container: dict[str, Any]) -> PredictorSettings:
    """The predictor's settings from its env (``PREDICTOR_*``) and flags, validated like the server does."""
    from classifier_plan._settings import chart_settings

    given: dict[str, Any] = {}
    for env in container.get("env", []):
        name = str(env.get("name", ""))
        if name.startswith("PREDICTOR_") and "value" in env:
            given[name.removeprefix("PREDICTOR_").lower()] = env["value"]
    args = [str(a) for a in container.get("args", [])]
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            given[k] = v
        elif a.startswith("--") and i + 1 < len(args):
            given[a[2:]] = args[i + 1]
            i += 1
        i += 1
    s = chart_settings(given)
    return PredictorSettings(**{f: getattr(s, f) for f in PredictorSettings.__dataclass_fields__})


def _probe_period(container: dict[str, Any], name: str, default: float) -> float:
    return float((container.get(name) or {}).get("periodSeconds", default))


def is_gpu_resource(name: str) -> bool:
    """A whole GPU (``nvidia.com/gpu``, ``amd.com/gpu``) or a share of one the NVIDIA device plugin
    advertises (a MIG slice ``nvidia.com/mig-1g.10gb``, a time-sliced replica ``nvidia.com/gpu.shared``)."""
    return name.endswith("/gpu") or name.startswith("nvidia.com/")


def read_pod(predictor: dict[str, Any], container: dict[str, Any]) -> PodSpec:
    """Resources, spot placement, model source, probes and drain times of the predictor pod."""
    res = container.get("resources", {})
    req, lim = res.get("requests", {}) or {}, res.get("limits", {}) or {}
    gpu_key = next((k for k in {**req, **lim} if is_gpu_resource(k)), None)
    gpus = int(parse_quantity(lim.get(gpu_key, req.get(gpu_key, 0)))) if gpu_key else 0
    prefs = (
        (predictor.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("preferredDuringSchedulingIgnoredDuringExecution", [])
    )
    prefers_spot = any(
        e.get("key") == "karpenter.sh/capacity-type" and "spot" in e.get("values", [])
        for p in prefs
        for e in p.get("preference", {}).get("matchExpressions", [])
    )
    tolerates_spot = any(t.get("value") == "spot" for t in predictor.get("tolerations", []) or [])
    env = {e.get("name"): e.get("value", "") for e in container.get("env", [])}
    return PodSpec(
        cpu_request=parse_quantity(req.get("cpu", lim.get("cpu", 0))),
        memory_request=parse_quantity(req.get("memory", lim.get("memory", 0))),
        gpu_resource=gpu_key if gpus else None,
        gpus=gpus,
        prefers_spot=prefers_spot,
        tolerates_spot=tolerates_spot,
        storage_uri=str(env.get("STORAGE_URI", "")),
        startup_period_s=_probe_period(container, "startupProbe", 10.0),
        readiness_period_s=_probe_period(container, "readinessProbe", 10.0),
        termination_grace_s=float(predictor.get("terminationGracePeriodSeconds", predictor.get("timeout", 30))),
    )


def _ann_float(ann: dict[str, Any], key: str) -> float | None:
    v = ann.get(KNATIVE_PREFIX + key)
    return None if v is None else float(str(v).rstrip("%"))


def read_knative(predictor: dict[str, Any]) -> KnativeScaling:
    """KPA knobs: the component's fields (KServe maps them to annotations) and explicit annotations."""
    ann = {**(predictor.get("annotations") or {})}
    target = predictor.get("scaleTarget")
    delay = ann.get(KNATIVE_PREFIX + "scale-down-delay")
    window = ann.get(KNATIVE_PREFIX + "window")
    tu = _ann_float(ann, "target-utilization-percentage")
    init = ann.get(KNATIVE_PREFIX + "initial-scale")
    activation = ann.get(KNATIVE_PREFIX + "activation-scale")
    return KnativeScaling(
        metric=str(predictor.get("scaleMetric") or ann.get(KNATIVE_PREFIX + "metric") or "concurrency"),
        target=float(target) if target is not None else _ann_float(ann, "target"),
        container_concurrency=int(predictor.get("containerConcurrency") or 0),
        target_utilization=None if tu is None else tu / 100.0,
        window_s=parse_duration(window) if window else None,
        panic_window_pct=_ann_float(ann, "panic-window-percentage"),
        panic_threshold_pct=_ann_float(ann, "panic-threshold-percentage"),
        scale_down_delay_s=parse_duration(delay) if delay else 0.0,
        initial_scale=int(init) if init is not None else None,
        revision_timeout_s=float(predictor.get("timeout", 300)),
        activation_scale=int(activation) if activation is not None else None,
    )


def _external_metric(metric: dict[str, Any]) -> HpaMetric | str:
    """An ``autoScaling.metrics[]`` entry as an HPA metric, or why it is not modelled."""
    if metric.get("type") == "Resource":
        r = metric.get("resource", {})
        return HpaMetric(str(r.get("name", "cpu")), float(r.get("target", {}).get("averageUtilization", 80)))
    ext = metric.get("external", {})
    query = str(ext.get("metric", {}).get("query", ""))
    threshold = float(parse_quantity(ext.get("target", {}).get("value", 0)))
    m = _QUERY.match(query)
    if m is None:
        return f"KEDA trigger query {query!r}: only avg/sum/max/min(metric{{...}}) queries are simulated"
    agg, name = m.group(1), m.group(2)
    signal = _SIGNALS.get(name) or ("gpu_util" if name == _SIGNALS_GPU else None)
    if signal is None:
        return f"KEDA trigger on {name}: not a metric the simulator produces"
    # KServe creates prometheus triggers without a metricType: KEDA's default AverageValue applies.
    return HpaMetric(signal, threshold, agg, "AverageValue", query)


def read_nodepool(objects: list[dict[str, Any]]) -> NodePoolSpec | None:
    """The first NodePool the chart renders (capacity types, families, limits, disruption)."""
    pools = [o for o in objects if o.get("kind") == "NodePool"]
    if not pools:
        return None
    spec = pools[0]["spec"]
    tmpl = spec.get("template", {}).get("spec", {})
    reqs = {r["key"]: tuple(r.get("values", [])) for r in tmpl.get("requirements", []) if r.get("operator") == "In"}
    dis = spec.get("disruption", {})
    budgets = dis.get("budgets") or [{"nodes": "10%"}]
    return NodePoolSpec(
        capacity_types=reqs.get("karpenter.sh/capacity-type", ("on-demand",)),
        families=reqs.get("karpenter.k8s.aws/instance-family", ()),
        instance_types=reqs.get("node.kubernetes.io/instance-type", ()),
        limits=tuple(sorted((k, parse_quantity(v)) for k, v in (spec.get("limits") or {}).items())),
        consolidate_after_s=parse_duration(dis.get("consolidateAfter", 0)),
        budget_nodes=str(budgets[0].get("nodes", "10%")),
    )


def _scrape_interval(objects: list[dict[str, Any]]) -> float | None:
    for o in objects:
        if o.get("kind") == "PodMonitor" and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == (
            "predictor"
        ):
            eps = o.get("spec", {}).get("podMetricsEndpoints", [])
            if eps:
                return parse_duration(eps[0].get("interval", "30s"))
    return None


def _http_addon(objects: list[dict[str, Any]], isvc: dict[str, Any]) -> dict[str, Any] | None:
    """The :class:`ChartPlan` fields of a KEDA HTTP add-on ``HTTPScaledObject`` scaling this predictor's
    Deployment (KServe names it ``<isvc>-predictor``), or None when there is none.

    The add-on's operator makes a ScaledObject of it (``cooldownPeriod`` = ``scaledownPeriod``, an
    ``external-push`` trigger on its scaler, no HPA behavior); the scaler's metric is an AverageValue of
    ``targetValue`` per pod (kedacore/http-add-on ``operator/controllers/http/scaled_object.go``,
    ``scaler/handlers.go``). Unset fields take the CRD's defaults.
    """
    target = f"{isvc['metadata']['name']}-predictor"
    for o in objects:
        if o.get("kind") != "HTTPScaledObject":
            continue
        spec = o.get("spec", {})
        if (spec.get("scaleTargetRef") or {}).get("name") != target:
            continue
        scaling = spec.get("scalingMetric") or {"concurrency": {}}
        metric = "requestRate" if "requestRate" in scaling else "concurrency"
        m = scaling.get(metric) or {}
        timeouts = spec.get("timeouts") or {}
        wait = timeouts.get("conditionWait")
        addon = HttpAddonScaling(
            metric=metric,
            target=float(m.get("targetValue", 100)),
            window_s=parse_duration(m.get("window", "1m")),
            scaledown_s=float(spec.get("scaledownPeriod", 300)),
            condition_wait_s=parse_duration(wait) if wait else math.inf,
            response_header_s=parse_duration(timeouts.get("responseHeader", "300s")),
        )
        signal = "http_request_rate" if metric == "requestRate" else "http_concurrency"
        return {
            "autoscaler": "httpAddon",
            "http_addon": addon,
            "keda": KedaScaling(polling_s=15.0, cooldown_s=addon.scaledown_s),  # the add-on's pollingInterval
            "hpa_metrics": (HpaMetric(signal, addon.target, "sum", "AverageValue"),),  # the scaler's, not PromQL
            "unmodelled": (),
        }
    return None


def _autoscaling(mode: str, ann: dict[str, Any], pred: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ChartPlan` fields of the autoscaler: KPA in Knative mode, else the class KServe's
    annotation names (HPA on the component's metric, or KEDA on its triggers)."""
    if mode == "knative":
        return {"autoscaler": "kpa", "knative": read_knative(pred)}
    autoscaler = str(ann.get("serving.kserve.io/autoscalerClass", "hpa"))
    if autoscaler == "external":
        # Something outside KServe scales the Deployment; read_plan names it when the chart renders it.
        return {"autoscaler": "none", "unmodelled": ("autoscalerClass external: replicas held fixed",)}
    metrics: list[HpaMetric] = []
    unmodelled: list[str] = []
    if autoscaler == "keda":
        for m in (pred.get("autoScaling") or {}).get("metrics", []):
            got = _external_metric(m)
            metrics.append(got) if isinstance(got, HpaMetric) else unmodelled.append(got)
    elif autoscaler == "hpa":
        metrics.append(HpaMetric(str(pred.get("scaleMetric", "cpu")), float(pred.get("scaleTarget", 80))))
    return {
        "autoscaler": autoscaler,
        "keda": KedaScaling() if autoscaler == "keda" else None,
        "hpa_metrics": tuple(metrics),
        "unmodelled": tuple(unmodelled),
    }


def read_plan(objects: list[dict[str, Any]]) -> ChartPlan:
    """The :class:`ChartPlan` of rendered objects."""
    isvc = _predictor_isvc(objects)
    ann = isvc["metadata"].get("annotations", {}) or {}
    pred = isvc["spec"]["predictor"]
    container = _container(pred)
    mode_ann = str(ann.get("serving.kserve.io/deploymentMode", "Standard"))
    mode = "knative" if mode_ann in ("Knative", "Serverless") else "standard"
    scaling = _autoscaling(mode, ann, pred)
    if mode == "standard" and ann.get("serving.kserve.io/autoscalerClass") == "external":
        scaling = _http_addon(objects, isvc) or scaling
    canary = isvc["spec"].get("canary") or (
        [{"trafficPercent": pred["canaryTrafficPercent"]}] if "canaryTrafficPercent" in pred else []
    )
    return ChartPlan(
        mode=mode,
        min_replicas=int(pred.get("minReplicas", 1)),
        max_replicas=int(pred.get("maxReplicas", 0)),
        settings=read_settings(container),
        pod=read_pod(pred, container),
        nodepool=read_nodepool(objects),
        scrape_interval_s=_scrape_interval(objects),
        canary=tuple(sorted((f"canary[{i}].trafficPercent", c.get("trafficPercent")) for i, c in enumerate(canary))),
        **scaling,
    )


def plan_from_values(chart: Path, values: list[Path], release: str = "image-classifier") -> tuple[ChartPlan, str]:
    """Render and read: the plan and the rendered text."""
    text = render(chart, values, release)
    return read_plan(parse_objects(text)), text
