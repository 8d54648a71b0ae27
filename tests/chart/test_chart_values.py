"""values.yaml, values.schema.json and the validate helper: bad values fail with a message that says why;
chart settings map one to one onto predictor.config.Settings."""

from __future__ import annotations

import json
import re
import typing

import pytest
import yaml

from predictor.config import Settings

from .chart_support import CHART, by_kind, one, render, render_error

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

CHART_MANAGED = {
    # Settings fields the chart sets itself instead of exposing under `settings`.
    "model_dir": "/mnt/models, where KServe's storage initializer puts the model",
    "model_name": "model.name",
    "model_version": "model.version",
    "http_port": "8080, the port KServe and Knative route to",
    "grpc_port": "not exposed: Knative allows one port per container",
    "enable_grpc": "not exposed: Knative allows one port per container",
    "cache_dir": "an emptyDir under /var/cache/classifier (read-only root filesystem)",
    "redis_url": "queue.redisUrl plus the password Secret",
    "consumer_name": "the pod name (POD_NAME)",
    "admin_token_file": "the admin.tokenSecret mount",
    "http_metrics_port": "monitoring.metricsPort (the PodMonitor and NetworkPolicy use it too)",
}
DELIBERATE_DEFAULTS = {"log_format": "json"}  # log collectors parse JSON lines


def write_values(tmp_path, text: str):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return [path]


# ---------------------------------------------------------------- bad values


def test_canary_percent_over_100_is_refused():
    err = render_error(set_values=["canary.trafficPercent=150"])
    assert "/canary/trafficPercent" in err and "maximum" in err


def test_negative_replicas_are_refused():
    err = render_error(set_values=["autoscaling.minReplicas=-1"])
    assert "/autoscaling/minReplicas" in err and "minimum" in err


def test_min_above_max_replicas_is_refused():
    err = render_error(set_values=["autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"])
    assert "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (2)" in err


def test_unknown_key_is_refused():
    err = render_error(set_values=["autoscalling.minReplicas=1"])
    assert "additional properties 'autoscalling' not allowed" in err


def test_unknown_nested_key_is_refused():
    err = render_error(set_values=["settings.max_batchsize=8"])
    assert "additional properties 'max_batchsize' not allowed" in err


def test_float_cpu_quantity_is_refused(tmp_path):
    err = render_error(write_values(tmp_path, "resources:\n  requests:\n    cpu: 0.5\n"))
    assert "/resources/requests/cpu" in err and "got number, want integer or string" in err


def test_malformed_quantity_string_is_refused():
    err = render_error(set_values=["resources.limits.memory=16 GB"])
    assert "/resources/limits/memory" in err


def test_keda_without_prometheus_address_is_refused():
    err = render_error(set_values=["deploymentMode=Standard", "autoscaling.standard.autoscaler=keda"])
    assert "prometheusAddress is empty" in err


@pytest.mark.parametrize("autoscaler", ["hpa", "keda", "none"])
def test_standard_scale_to_zero_without_a_waker_is_refused_with_the_alternatives(autoscaler):
    extra = ["autoscaling.standard.keda.prometheusAddress=http://prom:9090"] if autoscaler == "keda" else []
    zero = ["deploymentMode=Standard", "autoscaling.minReplicas=0", f"autoscaling.standard.autoscaler={autoscaler}"]
    err = render_error(set_values=[*zero, *extra])
    assert f'minReplicas is 0 in Standard mode with autoscaler "{autoscaler}"' in err
    for alternative in ("deploymentMode=Knative", "autoscaling.standard.autoscaler=httpAddon", "queue.enabled"):
        assert alternative in err, alternative


def test_the_old_standard_scale_to_zero_escape_hatch_is_gone():
    err = render_error(
        set_values=["deploymentMode=Standard", "autoscaling.minReplicas=0", "autoscaling.allowStandardScaleToZero=true"]
    )
    assert "additional properties 'allowStandardScaleToZero' not allowed" in err


def test_all_problems_are_reported_at_once():
    err = render_error(
        set_values=[
            "deploymentMode=Standard",
            "autoscaling.minReplicas=0",
            "autoscaling.maxReplicas=1",
            "autoscaling.standard.autoscaler=keda",
            "settings.default_top_k=50",
            "settings.max_top_k=10",
        ]
    )
    assert err.count("\n  - ") == 3, err


def test_standard_canary_must_differ_from_stable():
    err = render_error(set_values=["deploymentMode=Standard", "canary.enabled=true"])
    assert "canary predictor must differ" in err


def test_queue_needs_a_redis_url():
    err = render_error(set_values=["queue.enabled=true"])
    assert "queue.enabled needs queue.redisUrl" in err


def test_redis_url_with_credentials_is_refused():
    err = render_error(set_values=["queue.enabled=true", "queue.redisUrl=redis://:secret@redis:6379/0"])
    assert "must not carry credentials" in err


@pytest.mark.parametrize("gpu", ["true", "false"])
def test_more_than_one_server_process_is_refused(gpu):
    """The server runs one process per pod (it refuses --workers 2), so the schema accepts only 1."""
    for where in ("settings", "queue.worker.settings"):
        err = render_error(set_values=[f"{where}.workers=2", f"gpu.enabled={gpu}"])
        assert f"/{where.replace('.', '/')}/workers" in err and "maximum: got 2, want 1" in err


def test_nodepool_without_nodeclass_is_refused():
    err = render_error(set_values=["karpenter.nodePool.enabled=true"])
    assert "needs an EC2NodeClass" in err


def test_bad_enum_is_refused():
    err = render_error(set_values=["deploymentMode=Serverless"])
    assert "/deploymentMode" in err


# ---------------------------------------------------------------- values file hygiene


def test_every_value_has_a_doc_comment():
    """helm-docs style: every value is covered by a `# --` comment on itself or on an enclosing key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_./-]+):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        documented = j >= 0 and lines[j].strip().startswith("# --")
        covered = documented or any(d for _, d in stack)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_block = m.group(3).strip() == "" and len(nxt) - len(nxt.lstrip()) > indent
        if not covered and not is_block:
            missing.append(f"line {i + 1}: {line.strip()}")
        stack.append((indent, documented))
    assert not missing, "values without a `# --` comment:\n" + "\n".join(missing)


def _walk_schema(node, path="$"):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk_schema(sub, f"{path}.{key}")
    for key, sub in node.get("definitions", {}).items():
        yield from _walk_schema(sub, f"{path}#{key}")


def test_schema_closes_every_object():
    open_objects = [
        p
        for p, n in _walk_schema(SCHEMA)
        if n.get("type") == "object" and "properties" in n and n.get("additionalProperties") is not False
    ]
    assert not open_objects, open_objects


def test_schema_types_every_value():
    def walk(values, schema, path):
        if "$ref" in schema:
            schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
        if "allOf" in schema:
            schema = SCHEMA["definitions"][schema["allOf"][0]["$ref"].rsplit("/", 1)[1]]
        assert "type" in schema, f"{path} has no type in values.schema.json"
        if isinstance(values, dict) and "properties" in schema:
            for k, v in values.items():
                assert k in schema["properties"], f"{path}.{k} is not in values.schema.json"
                walk(v, schema["properties"][k], f"{path}.{k}")

    walk(VALUES, SCHEMA, "values")


# ---------------------------------------------------------------- settings <-> predictor.config.Settings


def test_settings_keys_are_settings_fields():
    fields = set(Settings.model_fields)
    assert set(VALUES["settings"]) <= fields
    assert set(SCHEMA["definitions"]["settings"]["properties"]) <= fields


def test_every_settings_field_is_exposed_or_chart_managed():
    fields = set(Settings.model_fields)
    assert fields == set(VALUES["settings"]) | set(CHART_MANAGED), fields ^ (
        set(VALUES["settings"]) | set(CHART_MANAGED)
    )
    assert not set(VALUES["settings"]) & set(CHART_MANAGED)


def test_chart_defaults_equal_predictor_defaults():
    defaults = Settings().model_dump()
    for key, value in VALUES["settings"].items():
        expected = DELIBERATE_DEFAULTS.get(key, defaults[key])
        assert value == expected, f"settings.{key}: chart {value!r}, predictor {defaults[key]!r}"


def test_schema_enums_match_settings_literals():
    for key, prop in SCHEMA["definitions"]["settings"]["properties"].items():
        annotation = Settings.model_fields[key].annotation
        if typing.get_origin(annotation) is typing.Literal:
            assert prop["enum"] == list(typing.get_args(annotation)), key


def test_schema_enums_of_backend_and_precision_are_the_registry_s():
    """The backend registry (predictor/engine/registry.py) is the one list of backends and precisions. The
    schema repeats it so that helm refuses a typo when the release is installed, not a pod when it starts
    (CrashLoopBackOff after the model download); this test keeps the two equal."""
    from predictor.config import REGISTERED_FIELDS, registered_values

    props = SCHEMA["definitions"]["settings"]["properties"]
    for key in REGISTERED_FIELDS:
        expected = list(registered_values(key))
        assert props[key]["enum"] == expected, f"chart/values.schema.json: settings.{key}.enum must be {expected}"


@pytest.mark.parametrize(("key", "typo"), [("backend", "onnx"), ("precision", "int8")])
def test_a_backend_or_precision_typo_fails_at_install_with_the_accepted_names(key: str, typo: str):
    from predictor.config import registered_values

    err = render_error(set_values=[f"settings.{key}={typo}"])
    assert f"/settings/{key}" in err and all(f"'{name}'" in err for name in registered_values(key)), err


def test_schema_bounds_are_at_least_as_strict_as_settings():
    for key, prop in SCHEMA["definitions"]["settings"]["properties"].items():
        for meta in Settings.model_fields[key].metadata:
            if getattr(meta, "ge", None) is not None:
                assert prop.get("minimum", float("-inf")) >= meta.ge, f"settings.{key} minimum"
            if getattr(meta, "le", None) is not None:
                assert prop.get("maximum", float("inf")) <= meta.le, f"settings.{key} maximum"


def _all_args(objects):
    for isvc in by_kind(objects, "InferenceService"):
        yield from isvc["spec"]["predictor"]["containers"][0]["args"]
        for canary in isvc["spec"].get("canary", []):
            yield from canary["predictor"]["containers"][0]["args"]
    for dep in by_kind(objects, "Deployment"):
        yield from dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_every_rendered_flag_is_a_settings_field(rendered):
    fields = set(Settings.model_fields)
    for profile, objects in rendered.items():
        args = list(_all_args(objects))
        assert args, profile
        for arg in args:
            assert arg.startswith("--") and "=" in arg, arg
            assert arg[2:].split("=", 1)[0] in fields, f"{profile}: {arg} is not a predictor setting"


def test_rendered_flags_parse_into_settings(rendered):
    """The flags the chart renders are accepted by Settings and carry the chart's values."""
    for objects in rendered.values():
        for isvc in by_kind(objects, "InferenceService"):
            args = dict(a[2:].split("=", 1) for a in isvc["spec"]["predictor"]["containers"][0]["args"])
            settings = Settings(**args)
            assert settings.model_name == "classifier"
            assert settings.request_timeout_ms == 30_000


def test_settings_value_reaches_the_flag_with_its_type(tmp_path):
    objects = render(write_values(tmp_path, "settings:\n  max_batch_delay_ms: 2.5\n  max_request_bytes: 67108864\n"))
    args = one(objects, "InferenceService")["spec"]["predictor"]["containers"][0]["args"]
    assert "--max_batch_delay_ms=2.5" in args
    assert "--max_request_bytes=67108864" in args  # not 6.7108864e+07


def test_worker_settings_override_only_the_worker(rendered):
    objects = rendered["queue-worker"]
    worker_args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    isvc_args = one(objects, "InferenceService")["spec"]["predictor"]["containers"][0]["args"]
    assert "--max_batch_size=64" in worker_args and "--max_batch_size=32" in isvc_args


@pytest.mark.parametrize("flag", ["model_version", "max_asyncio_workers"])
def test_optional_settings_are_omitted_when_unset(flag, rendered):
    args = one(rendered["default"], "InferenceService")["spec"]["predictor"]["containers"][0]["args"]
    assert not any(a.startswith(f"--{flag}=") for a in args)


def _leaf_keys(values, prefix=""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.lower().endswith(("labels", "limits", "annotations")):
            if path in {"resources", "podSecurityContext", "containerSecurityContext", "queue.worker.resources",
                        "canaryAnalysis.resources"}:  # fmt: skip
                yield path
                continue
            yield from _leaf_keys(value, f"{path}.")
        else:
            yield path


def test_readme_values_table_lists_every_value():
    readme = (CHART / "README.md").read_text()
    missing = [k for k in _leaf_keys(VALUES) if f"| `{k}` |" not in readme]
    assert not missing, missing


def test_rendered_args_parse_with_the_real_cli(rendered):
    """`python -m predictor serve|worker` (its own argparse) accepts exactly what the chart renders."""
    from predictor.__main__ import build_parser
    from predictor.config import settings_from_args

    parser = build_parser()
    for profile, objects in rendered.items():
        for isvc in by_kind(objects, "InferenceService"):
            components = [isvc["spec"]["predictor"]] + [c["predictor"] for c in isvc["spec"].get("canary", [])]
            for component in components:
                rendered_args = component["containers"][0]["args"]
                settings = settings_from_args(parser.parse_args(["serve", *rendered_args]))
                assert f"--max_batch_size={settings.max_batch_size}" in rendered_args, profile
                assert str(settings.model_dir) == "/mnt/models" and settings.http_port == 8080
        for dep in by_kind(objects, "Deployment"):
            c = dep["spec"]["template"]["spec"]["containers"][0]
            assert c["command"][-1] == "worker"
            args = parser.parse_args(["worker", *c["args"]])
            settings = settings_from_args(args)
            assert settings.redis_url.startswith("redis://") and settings.metrics_port == 9090, profile
