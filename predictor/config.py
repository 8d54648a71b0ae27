"""Settings: one pydantic-settings class, mapped one to one onto CLI flags and Helm values.

Every field is settable by environment variable with the ``PREDICTOR_`` prefix
(``PREDICTOR_MAX_BATCH_SIZE=64``) and by the flag of the same name in kebab-case (``--max-batch-size 64``;
the field's own spelling, ``--max_batch_size``, is accepted too: see :mod:`predictor.flags`).
KServe's own flag names (``--http_port``, ``--workers``, ...) are kept in that spelling.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from predictor.podinfo import pod_name

Device = Literal["auto", "cpu", "cuda"]
REGISTERED_FIELDS = ("backend", "precision")
"""Fields whose values the backend registry names, not this module: see :func:`registered_values`."""


def registered_values(field_name: str) -> tuple[str, ...]:
    """What the ``backend`` or ``precision`` setting accepts: ``auto`` and what the backend registry names
    (:func:`predictor.engine.registry.setting_values`), so a new backend needs no change here."""
    # Imported when a value is checked, not with this module: the engine package sits above the settings.
    from predictor.engine import registry

    return registry.setting_values(field_name)


class Settings(BaseSettings):
    """All settings of the predictor server and the queue worker."""

    model_config = SettingsConfigDict(env_prefix="PREDICTOR_", extra="ignore", protected_namespaces=())

    # --- model ---------------------------------------------------------------------------------
    model_dir: Path = Field(
        Path("/mnt/models"),
        description="Hugging Face image-classification directory (config.json, weights, preprocessor "
        "config). KServe's storage initializer downloads STORAGE_URI here.",
    )
    model_name: str = Field(
        "classifier",
        min_length=1,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        description="Name the model is served under (/v2/models/{model_name}).",
    )
    model_version: str = Field(
        "", description="Version reported in responses and metrics; empty = derived from the weights' hash."
    )
    device: Device = Field("auto", description="Inference device: auto picks cuda when present, else cpu.")
    backend: str = Field(
        "auto",
        description="Inference backend, one of those predictor/engine/registry.py registers; auto = the fixed "
        "order of predictor/engine/choice.py for the device, decided before ready and never changed while serving.",
    )
    precision: str = Field(
        "auto",
        description="Numeric precision; auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AMX or "
        "AVX-512 BF16), each only if it keeps this model's answers against fp32 (checked before ready, the "
        "verdict cached in cache_dir, which pods may share), else fp32. fp32 is always available.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where exported artefacts (ONNX, OpenVINO IR) and precision-check verdicts are cached, keyed "
        "by the model's content (verdicts also by runtime version and hardware), so pods that share it (a "
        "shared volume) pay the export and the check once; default: <model_dir>/.cache when writable, else a "
        "temp directory.",
    )
    cpu_threads: int = Field(0, ge=0, description="Threads for CPU inference; 0 = number of usable cores.")
    torch_compile: bool = Field(
        False,
        description="torch backend: torch.compile the model (CUDA graphs on a GPU) for each batch bucket; every "
        "bucket compiles at start (minutes). Off: eager, which is what the precision check measures.",
    )
    gpu_memory_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the GPU's memory (of the MIG slice, under MIG) this process may allocate: "
        "torch's set_per_process_memory_fraction, onnxruntime's gpu_mem_limit. Below 1 when several pods share "
        "one GPU by time-slicing, which isolates no memory; 1 = no limit of our own.",
    )
    openvino_hint: Literal["auto", "LATENCY", "THROUGHPUT"] = Field(
        "auto",
        description="openvino backend: LATENCY runs a batch as one request on all cores; THROUGHPUT spreads its "
        "images over parallel streams (one core each here), so other threads on a core slow one stream, not "
        "the whole pass; auto = LATENCY (the two measured a tie, docs/performance.md).",
    )

    # --- batching ------------------------------------------------------------------------------
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most images in one forward pass.")
    max_batch_delay_ms: float = Field(
        5.0,
        ge=0,
        le=10_000,
        description="Longest time the first image of a batch waits for more images before the forward pass starts.",
    )
    oom_recovery_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="After device memory ran out and the batch cap was lowered to the largest batch that fit, "
        "seconds without another out-of-memory error before the cap grows one step (a quarter) back towards "
        "max_batch_size.",
    )
    max_queue_images: int = Field(
        256,
        ge=1,
        description="Images allowed to wait for inference; past this a request gets 503 with Retry-After.",
    )
    request_timeout_ms: int = Field(
        30_000, ge=1, description="Deadline of one request from arrival; past it the answer is 504."
    )
    decode_threads: int = Field(0, ge=0, description="Image decoding threads; 0 = number of usable cores.")
    jpeg_decode: Literal["cpu", "device"] = Field(
        "cpu",
        description="Where JPEGs are decoded: cpu = the decode threads (libjpeg-turbo, DCT-scaled); device = "
        "in batches on the inference device (nvJPEG on a GPU; needs backend torch), other formats on the CPU.",
    )

    # --- limits --------------------------------------------------------------------------------
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger gets 413."
    )
    max_images_per_request: int = Field(64, ge=1, description="Most images in one request.")
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest declared width*height of one image; larger is refused before decoding "
        "(decompression bombs).",
    )
    default_top_k: int = Field(5, ge=1, description="Classes returned per image when top_k is not given.")
    max_top_k: int = Field(100, ge=1, description="Largest top_k a request may ask for.")
    prediction_metrics_max_classes: int = Field(
        1000,
        ge=0,
        le=10_000,
        description="Top-1 classes counted one by one in classifier_predictions_total (class ids below this; "
        'the rest as class="other"): bounds the series per pod. 0 counts every answer as other.',
    )

    # --- server (KServe's flag names) ------------------------------------------------------------
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (REST, /classify, /metrics).")
    grpc_port: int = Field(8081, ge=0, le=65535, description="gRPC port (only with enable_grpc).")
    enable_grpc: bool = Field(False, description="Serve the v2 gRPC protocol too.")
    workers: int = Field(
        1,
        ge=1,
        le=1,
        description="Server processes per pod: only 1 (one process holds the model and our routes); scale with "
        "replicas. KServe's flag, kept for its name.",
    )
    max_asyncio_workers: int | None = Field(None, ge=1, description="Size of the default thread pool.")
    grace_period_seconds: int = Field(
        30, ge=0, description="After SIGTERM, longest time to finish queued and in-flight requests."
    )
    enable_docs_url: bool = Field(False, description="Serve the OpenAPI docs at /docs.")
    enable_ui: bool = Field(
        False,
        description="Serve the try-it page at / (files under /ui/): pick, drop or paste images, see the top "
        "classes. Off by default (and in the chart); `make run` turns it on. Off: / and /ui/... answer 404.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    rejection_log_interval_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Rejected requests (4xx, 503, 504) are logged one line per kind and interval, then summed "
        "up in one line at the interval's end, instead of one line each; every one is counted in "
        "classifier_rejections_total (and logged at DEBUG).",
    )

    # --- slow clients: connection and upload limits (docs/security.md, "Limits") ------------------
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Longest time a connection may take to send a request's head (request line and headers), "
        "counted from the connection's start, or from the first byte of the next request on a kept-alive "
        "connection; past it the HTTP server answers 408 and closes it (slowloris).",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request head (request line and headers) in bytes; larger gets 431 and the "
        "connection is closed before the rest is read.",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest time a request's body may take to arrive, from the end of its head; past it the "
        "answer is 408 and the connection is closed.",
    )
    min_upload_bytes_per_s: int = Field(
        10_000,
        ge=0,
        description="Slowest average upload rate of a request body after upload_grace_s; a body arriving "
        "slower (a stalled one included) is answered 408 at once. 0 = no minimum rate.",
    )
    upload_grace_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Time a request body may take before min_upload_bytes_per_s applies (a slow start, a "
        "client that waits for 100-continue).",
    )
    keep_alive_timeout_s: float = Field(
        65.0,
        gt=0,
        le=3600,
        description="An idle kept-alive connection (no request on it) is closed after this long. KServe's "
        "default, longer than the 60 s idle timeout of common load balancers, so that they close first.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Most open HTTP connections; at it a new connection closes the one idle longest (silent "
        "since it opened, or kept alive between requests), and only when every other is busy is a request on it "
        "answered 503 with Retry-After and the connection closed.",
    )

    # --- front door: what is served, to whom ----------------------------------------------------
    enable_model_repository_routes: bool = Field(
        False,
        description="Serve KServe's model-repository routes (POST /v2/repository/models/{name}/load and "
        "/unload), which change the server's state, to callers with the admin token (admin_token_file). Off: "
        "they are not mounted (404). Their gRPC RPCs are never served (UNIMPLEMENTED).",
    )
    admin_token_file: Path | None = Field(
        None,
        description="File holding the bearer token of the admin routes (a mounted Secret; surrounding "
        "whitespace ignored; read on every admin call, so a rotated Secret applies without a restart). "
        "Required with enable_model_repository_routes.",
    )
    liveness_not_ready_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="Once the model has been ready, longest time it may stay not ready (unloaded, stopped) "
        "before /v2/health/live answers 503 so the kubelet restarts the container. Before the first ready, "
        "liveness stays 200 (the startup probe covers loading).",
    )
    http_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Serve: a second HTTP port that answers only Prometheus metrics, so a NetworkPolicy can "
        "let the monitoring namespace scrape and nothing else; /metrics then leaves http_port. 0 = no "
        "second port, /metrics on http_port.",
    )

    # --- queue mode ------------------------------------------------------------------------------
    redis_url: str = Field("", description="Redis URL for queue mode (worker and /v1/jobs); empty disables /v1/jobs.")
    stream: str = Field("image_processing_queue", min_length=1, description="Redis stream of jobs.")
    consumer_group: str = Field("classifiers", min_length=1, description="Redis consumer group.")
    consumer_name: str = Field(
        default_factory=pod_name,
        description="This worker's consumer name in the group (the pod name).",
    )
    dead_letter_stream: str = Field(
        "image_processing_queue:dead", min_length=1, description="Stream that poison jobs move to."
    )
    result_ttl_seconds: int = Field(86_400, ge=1, description="How long job results are kept.")
    visibility_timeout_ms: int = Field(
        60_000,
        ge=1000,
        description="A job delivered this long ago and not acknowledged is reclaimed by another worker.",
    )
    max_deliveries: int = Field(
        5, ge=1, description="Deliveries after which a failing job moves to the dead-letter stream."
    )
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Worker's Prometheus metrics port; 0 = no metrics server."
    )

    # --- front door: fair decoding, latency-bounded admission, gRPC limits (issue 23) ------------
    max_queue_wait_ms: int = Field(
        1000,
        ge=1,
        description="Queue-wait budget: a request is admitted only if the images queued ahead of it and its own "
        "are expected to leave the queue within this time at the measured drain rate (images per busy second), "
        "corrected by how much longer recent requests took until their answer; otherwise it gets 503 with "
        "Retry-After at once. Each forward pass is kept within an eighth of it (smaller batches). Capped at "
        "request_timeout_ms. A request finding the queue empty is always admitted; until images have drained (a "
        "cold or woken pod) the rate is estimated from a forward pass timed at start. max_queue_images stays the "
        "memory bound.",
    )
    paced_refusals_per_s: float = Field(
        400.0,
        ge=0,
        description="Overloaded requests refused (503) at once per second, after a burst of as many; beyond it "
        "each refusal is held until its turn (its client, waiting for it, sends nothing new), so that clients "
        "resending at once cannot take the event loop from the requests it serves; refusals past half of it (over the "
        "last 2 s) stretch Retry-After in proportion, so that clients honouring it come back spread out. 0 = every "
        "refusal at once, Retry-After the drain time.",
    )
    max_queue_pixels: int = Field(
        1_000_000_000,
        ge=1,
        description="Most decoded pixels (width*height, JPEGs at their DCT-scaled decode size) of the images "
        "admitted at once: past it a request gets 503 with Retry-After; one request decoding to more is "
        "refused with 413. Decoding costs by pixels, not by image count.",
    )
    grpc_max_concurrent_streams: int = Field(
        4096,
        ge=1,
        description="gRPC: most calls open at once on one connection (HTTP/2 MAX_CONCURRENT_STREAMS). Calls past "
        "it are refused by HTTP/2 itself (REFUSED_STREAM: the client sees UNAVAILABLE without pushback), so it "
        "is kept above the bursts one client sends; grpc_max_pending_rpcs is the limit that answers a burst.",
    )
    grpc_max_pending_rpcs: int = Field(
        256,
        ge=1,
        description="gRPC: most ModelInfer calls in progress in the server (all connections; health and metadata "
        "calls are never refused); past it a call is answered "
        "RESOURCE_EXHAUSTED with a message and grpc-retry-pushback-ms trailing metadata, without being parsed.",
    )
    grpc_max_connections: int = Field(
        1000,
        ge=1,
        description="gRPC: most open connections to the gRPC port (gRPC core's max_allowed_incoming_connections); "
        "a connection beyond it is closed as soon as it is accepted (its client sees UNAVAILABLE), so that "
        "gRPC connections cannot take the file descriptors the HTTP port needs.",
    )
    grpc_max_connection_idle_s: float = Field(
        65.0,
        gt=0,
        le=86_400,
        description="gRPC: a connection with no call in progress for this long is closed (HTTP/2 GOAWAY; a "
        "client's channel reconnects on its next call). As keep_alive_timeout_s for HTTP.",
    )
    grpc_handshake_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="gRPC: longest time a new connection may take to send HTTP/2's connection preface and "
        "SETTINGS; past it the connection is closed without an answer. As header_timeout_s for HTTP.",
    )
    grpc_max_connection_age_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="gRPC: a connection open this long (±10 %, gRPC's jitter) is told to go (HTTP/2 GOAWAY: its "
        "calls in progress finish, a client's channel reconnects) and closed request_timeout_ms later, calls "
        "still open included: a call whose message never comes holds its connection at most this long plus "
        "request_timeout_ms.",
    )

    @field_validator(*REGISTERED_FIELDS)
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        accepted = registered_values(str(info.field_name))
        if value not in accepted:
            quoted = [repr(v) for v in accepted]
            raise PydanticCustomError(
                "not_registered",
                "Input should be {expected} (as registered in predictor/engine/registry.py), not {given}",
                {"expected": ", ".join(quoted[:-1]) + " or " + quoted[-1], "given": repr(value)},
            )
        return value

    def queue_wait_budget_ms(self) -> int:
        """The queue-wait budget in force: ``max_queue_wait_ms``, at most ``request_timeout_ms``."""
        return min(self.max_queue_wait_ms, self.request_timeout_ms)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) exceeds max_top_k ({self.max_top_k})")
        return self

    @model_validator(mode="after")
    def _check_front_door(self) -> Settings:
        if self.enable_model_repository_routes and self.admin_token_file is None:
            raise ValueError(
                "enable_model_repository_routes needs admin_token_file (a file holding the bearer token, "
                "e.g. a mounted Secret): the repository routes are never served without a token"
            )
        if self.http_metrics_port and self.http_metrics_port in (self.http_port, self.grpc_port):
            raise ValueError(f"http_metrics_port ({self.http_metrics_port}) must differ from http_port and grpc_port")
        return self

    def usable_cores(self) -> int:
        """Cores this process may run on (the affinity mask, not the host's count)."""
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per settings field; unset flags fall back to env vars, then defaults.

    Each flag's help says its default and environment variable; a field with a fixed set of values
    lists them (``--device {auto,cpu,cuda}``) and argparse refuses others. The flag is the field's name
    in kebab-case (``--max-batch-size``); :class:`predictor.flags.Parser` accepts the field's own spelling.
    """
    for name, field in Settings.model_fields.items():
        choices = list(registered_values(name)) if name in REGISTERED_FIELDS else _choices(field.annotation)
        default = "(the pod name, else the host name)" if field.default_factory else _shown(field.default)
        help_text = f"{field.description} Default: {default}. Env: PREDICTOR_{name.upper()}."
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%"),
            choices=choices,
            type=str.lower if field.annotation is bool else None,
            metavar=None if choices else _metavar(field.annotation),
        )


def _choices(annotation: Any) -> list[str] | None:
    if annotation is bool:
        return ["true", "false"]
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    return None


def _metavar(annotation: Any) -> str:
    names = {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return names.get(args[0], "VALUE")


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "empty"


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Build settings from parsed flags (only those given), env vars and defaults."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    given.update(overrides)
    return Settings(**given)
