"""Capacity and cost planner: simulate what the chart's autoscaling does under a traffic profile.

``python -m predictor plan --values docs/plan/example-values.yaml --traffic docs/traffic/black-friday.yaml
--capacity bench/results/capacity.json --slo-p95-ms 500 --out plan/`` renders the chart with the
values (``helm template``), reads the autoscaling it produced, and simulates pods, autoscalers, nodes
and cost (see docs/capacity.md). Nothing here imports torch or loads a model.
"""

from classifier_plan.errors import PlanInputError

__all__ = ["PlanInputError"]
