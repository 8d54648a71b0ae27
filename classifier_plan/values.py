"""The user's values: read, merged, and sorted into modelled / not modelled / same as the default.

Whether the simulator models a value is decided by rendering, not by its name: for each leaf of the
user's values, the chart is rendered again without it. If the manifests do not change, the value equals
the chart's default; if they change but the :class:`~classifier_plan.chart.ChartPlan` read from them does
not, the simulator does not model it (listed in the report); otherwise it is modelled. So a renamed or
new chart value is classified correctly without this module knowing its name.
"""

from __future__ import annotations

import copy
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from classifier_plan.chart import ChartPlan, parse_objects, read_plan, render
from classifier_plan.errors import PlanInputError


@dataclass(frozen=True)
class ValueCheck:
    """One leaf of the user's values and what the simulator does with it."""

    key: str
    value: Any
    status: str  # modelled | not modelled | chart default | required to render


def read_values(files: list[Path]) -> dict[str, Any]:
    """The user's values files deep-merged in order (as ``helm -f a -f b`` does).

    Raises:
        PlanInputError: a file is missing or not a YAML mapping.
    """
    merged: dict[str, Any] = {}
    for f in files:
        try:
            data = yaml.safe_load(Path(f).read_text())
        except OSError as e:
            raise PlanInputError(str(f), "", f"cannot read the values file: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise PlanInputError(str(f), "", f"not YAML: {e}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise PlanInputError(str(f), "", "a values file is a mapping of chart values")
        merged = deep_merge(merged, data)
    return merged


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base`` (maps merged key by key, anything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf (a scalar, a list, or an empty map) with its path."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for k, v in values.items():
        if isinstance(v, dict) and v:
            out += leaves(v, (*prefix, str(k)))
        else:
            out.append(((*prefix, str(k)), v))
    return out


def without(values: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``values`` without the leaf at ``path`` (parents left empty are dropped)."""
    out = copy.deepcopy(values)
    node = out
    parents = []
    for k in path[:-1]:
        parents.append((node, k))
        node = node[k]
    del node[path[-1]]
    for parent, k in reversed(parents):
        if parent[k] == {}:
            del parent[k]
    return out


def write_values(values: dict[str, Any], directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def classify(chart: Path, values: dict[str, Any], release: str, plan: ChartPlan, rendered: str) -> list[ValueCheck]:
    """Sort every leaf of ``values`` by what removing it changes."""
    items = leaves(values)
    if not items:
        return []
    with tempfile.TemporaryDirectory(prefix="plan-values-") as tmp:

        def check(i: int) -> ValueCheck:
            path, value = items[i]
            f = write_values(without(values, path), Path(tmp), f"v{i}.yaml")
            key = ".".join(path)
            try:
                text = render(chart, [f], release)
            except PlanInputError:
                return ValueCheck(key, value, "required to render")
            if text == rendered:
                return ValueCheck(key, value, "chart default")
            same = read_plan(parse_objects(text)) == plan
            return ValueCheck(key, value, "not modelled" if same else "modelled")

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(check, range(len(items))))
