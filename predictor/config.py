"""Settings: one pydantic-settings class, mapped one to one onto CLI flags and Helm values.

Every field is settable by environment variable with the ``PREDICTOR_`` prefix
(``PREDICTOR_MAX_BATCH_SIZE=64``) and by the flag of the same name (``--max_batch_size 64``).
KServe's own flag names (``--http_port``, ``--workers``, ...) are kept.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from predictor.podinfo import pod_name

Backend = Literal["auto", "torch", "openvino", "onnxruntime"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]


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
    backend: Backend = Field(
        "auto",
        description="Inference backend; auto = the policy's pick for the device, then on the CPU the fastest "
        "backend that keeps the answers as measured on this machine after the first start (cached).",
    )
    precision: Precision = Field(
        "auto",
        description="Numeric precision; auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AMX or "
        "AVX-512 BF16), each only if it keeps this model's answers against fp32 (checked at first load, "
        "verdict cached), else fp32. fp32 is always available.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where exported artefacts (ONNX, OpenVINO IR) are cached, keyed by the model's "
        "content; default: <model_dir>/.cache when writable, else a temp directory.",
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
        "the whole pass; auto = the one a speed check measured faster on this machine (LATENCY until then).",
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

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) exceeds max_top_k ({self.max_top_k})")
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
    lists them (``--device {auto,cpu,cuda}``) and argparse refuses others.
    """
    for name, field in Settings.model_fields.items():
        choices = _choices(field.annotation)
        default = "(the pod name, else the host name)" if field.default_factory else _shown(field.default)
        help_text = f"{field.description} Default: {default}. Env: PREDICTOR_{name.upper()}."
        parser.add_argument(
            f"--{name}",
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
