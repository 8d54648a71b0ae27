"""The reference set: known images sent to the stable and the canary through their own addresses.

Before the first traffic step and at each check, every image of a directory goes to each revision's
``/classify`` (``top_k=1``); the canary passes when its top-1 answers agree with the stable's on at least
``min_reference_agreement`` of the images and, when expected labels are given, its accuracy is not lower
than the stable's by more than ``max_reference_accuracy_drop``. The report names the images whose
answer changed.

Addresses: ``--stable-url``/``--canary-url``, or by default the revisions' own cluster services
(Knative: the revision's Service ``http://<revision>.<namespace>.svc.cluster.local``; Standard:
``http://<isvc>-predictor[-canary].<namespace>.svc.cluster.local``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from classifier_canary.config import CanaryConfig
from classifier_canary.errors import CanaryInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BATCH_IMAGES = 8
"""Images per ``/classify`` request (well under the default ``max_images_per_request``)."""


@dataclass(frozen=True)
class ReferenceSet:
    """The images (name -> bytes, sorted by name) and their expected labels (name -> label, maybe empty)."""

    images: dict[str, bytes]
    expected: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, labels_file: Path | None) -> ReferenceSet:
        """Read the images of ``directory`` and the ``image,label`` CSV ``labels_file``.

        Raises:
            CanaryInputError: no image, an unreadable file, or a label for an image that is not there.
        """
        if not directory.is_dir():
            raise CanaryInputError(f"--reference-dir {directory}: not a directory")
        paths = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise CanaryInputError(f"--reference-dir {directory}: no image ({', '.join(IMAGE_SUFFIXES)})")
        images = {p.name: p.read_bytes() for p in paths}
        expected: dict[str, str] = {}
        if labels_file is not None:
            try:
                rows = list(csv.reader(labels_file.read_text().splitlines()))
            except OSError as e:
                raise CanaryInputError(f"--reference-labels {labels_file}: {e}") from None
            for n, row in enumerate(rows, 1):
                if not row or row[0].startswith("#") or (n == 1 and row[:2] == ["image", "label"]):
                    continue
                if len(row) != 2 or row[0] not in images:
                    raise CanaryInputError(
                        f"--reference-labels {labels_file} line {n}: expected `image,label` naming an image of "
                        f"{directory}, got {row}"
                    )
                expected[row[0]] = row[1]
        return cls(images, expected)


@dataclass(frozen=True)
class ReferenceResult:
    """Both revisions' answers to the reference set, or the ``problem`` that kept one from answering."""

    images: int
    agreement: float | None = None
    stable_accuracy: float | None = None
    canary_accuracy: float | None = None
    changed: tuple[str, ...] = ()
    """``name: stable's label -> canary's label`` of every image whose top-1 answer changed."""
    problem: str | None = None


def classify_all(client: httpx.Client, url: str, images: dict[str, bytes]) -> dict[str, str]:
    """Top-1 label of each image from ``url``'s ``/classify``.

    Raises:
        httpx.HTTPError: a request failed; ValueError: an answer that is not the predictor's.
    """
    names, out = list(images), {}
    for i in range(0, len(names), BATCH_IMAGES):
        chunk = names[i : i + BATCH_IMAGES]
        files = [("image", (n, images[n], "application/octet-stream")) for n in chunk]
        r = client.post(f"{url.rstrip('/')}/classify", params={"top_k": 1}, files=files)
        if r.status_code != 200:
            raise ValueError(f"{url}/classify answered {r.status_code}: {r.text[:200]}")
        predictions = r.json().get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(chunk):
            raise ValueError(f"{url}/classify answered {len(predictions or [])} predictions for {len(chunk)} images")
        out.update({n: p[0]["label"] for n, p in zip(chunk, predictions, strict=True)})
    return out


def compare(ref: ReferenceSet, stable: dict[str, str], canary: dict[str, str]) -> ReferenceResult:
    """Agreement and accuracies of two revisions' answers (an independent computation over the names)."""
    names = list(ref.images)
    same = [n for n in names if stable[n] == canary[n]]
    changed = tuple(f"{n}: {stable[n]!r} -> {canary[n]!r}" for n in names if stable[n] != canary[n])
    acc_s = acc_c = None
    if ref.expected:
        labelled = list(ref.expected)
        acc_s = sum(stable[n] == ref.expected[n] for n in labelled) / len(labelled)
        acc_c = sum(canary[n] == ref.expected[n] for n in labelled) / len(labelled)
    return ReferenceResult(len(names), len(same) / len(names), acc_s, acc_c, changed)


def run_reference(ref: ReferenceSet, stable_url: str, canary_url: str, timeout_s: float) -> ReferenceResult:
    """Send the set to both revisions and compare their answers; a failure to get them is the ``problem``."""
    with httpx.Client(timeout=timeout_s) as client:
        answers = {}
        for role, url in (("stable", stable_url), ("canary", canary_url)):
            try:
                answers[role] = classify_all(client, url, ref.images)
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                return ReferenceResult(len(ref.images), problem=f"{role} at {url} did not answer: {e}")
    return compare(ref, answers["stable"], answers["canary"])


def reference_reasons(r: ReferenceResult, cfg: CanaryConfig) -> list[str]:
    """Why the reference set fails the canary (empty: it passes)."""
    if r.problem:
        return [f"reference set: {r.problem}"]
    out = []
    shown = "; ".join(r.changed[:10]) + (f"; and {len(r.changed) - 10} more" if len(r.changed) > 10 else "")
    if r.agreement is not None and r.agreement < cfg.min_reference_agreement:
        out.append(
            f"reference set: canary agrees with the stable on {100 * r.agreement:.1f}% of {r.images} images "
            f"< {100 * cfg.min_reference_agreement:g}%; changed: {shown}"
        )
    if r.canary_accuracy is not None and r.stable_accuracy is not None:
        if r.canary_accuracy < r.stable_accuracy - cfg.max_reference_accuracy_drop:
            out.append(
                f"reference set: canary accuracy {100 * r.canary_accuracy:.1f}% < the stable's "
                f"{100 * r.stable_accuracy:.1f}% - {100 * cfg.max_reference_accuracy_drop:g}%; changed: {shown}"
            )
    return out


def revision_urls(cfg: CanaryConfig, mode: str, stable: str, canary: str) -> tuple[str, str]:
    """The stable's and canary's addresses: the flags, else the revisions' own cluster services."""
    ns = cfg.namespace
    if mode == "Knative":
        default = (f"http://{stable}.{ns}.svc.cluster.local", f"http://{canary}.{ns}.svc.cluster.local")
    else:
        base = f"{cfg.isvc}-predictor"
        default = (f"http://{base}.{ns}.svc.cluster.local", f"http://{base}-canary.{ns}.svc.cluster.local")
    return cfg.stable_url or default[0], cfg.canary_url or default[1]
