"""What the chart deploys, read from ``helm template`` output (never from values key names).

:func:`render` runs the real ``helm template`` with the user's values; :func:`read_plan` turns the
rendered objects into a :class:`ChartPlan`. Modules: ``render`` (helm), ``read`` (objects to plan),
``spec`` (the plan's types).
"""

from classifier_plan.chart.read import (
    KNATIVE_PREFIX,
    plan_from_values,
    read_knative,
    read_nodepool,
    read_plan,
    read_pod,
    read_settings,
)
from classifier_plan.chart.render import helm_binary, parse_objects, render
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

__all__ = [
    "KNATIVE_PREFIX",
    "ChartPlan",
    "HpaMetric",
    "HttpAddonScaling",
    "KedaScaling",
    "KnativeScaling",
    "NodePoolSpec",
    "PodSpec",
    "PredictorSettings",
    "helm_binary",
    "parse_objects",
    "plan_from_values",
    "read_knative",
    "read_nodepool",
    "read_plan",
    "read_pod",
    "read_settings",
    "render",
]
