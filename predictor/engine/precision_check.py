"""Does reduced precision keep this model's answers? Checked before ready, once per model and hardware.

``precision=auto`` may serve a model in bf16 (CPU with native bf16) or fp16 (CUDA) only if, for *this*
model on *this* hardware and runtime, the reduced-precision engine gives the same answers as the same
backend in fp32 on a built-in calibration set (:file:`predictor/calibration/`, public-domain and CC0
images from scikit-image):

* top-1 identical on the real-object photos (cat, coffee, rocket, astronaut), and
* >= 95 % top-1 agreement on the varied set: eight views of every calibration image (flips,
  rotations, crops, a harsh re-encode, a low-resolution copy), textures, scans and microscopy among
  them, where a model is unsure and near-ties are common.

Whether a model passes depends on the model (near-ties in its logits), not only on the backend; what
the check gave for the embedded model on the machines measured is in docs/performance.md. The check
costs one extra engine load and the calibration set through both engines (13 s for a ResNet-50 on two
cores), before the pod reports ready (:mod:`predictor.engine.choice`). Its verdict is cached beside the
exported artefacts, keyed by the model's content, the backend and its version, the precision and the
hardware, so a restart, or any pod that shares the cache directory, does not pay it again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from predictor.engine.cache import read_verdict_file, write_verdict_file
from predictor.preprocess import PreprocessSpec, decode_image, prepare_pil

if TYPE_CHECKING:
    from predictor.engine.base import Engine
    from predictor.engine.choice import ServingChoice

logger = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "calibration"
MIN_AGREEMENT = 0.95
"""Least top-1 agreement with fp32 on the varied set (the photos must agree exactly)."""
MIN_REFERENCE_CLASSES = 8
"""Least number of distinct fp32 top-1 classes on the calibration set (or all classes, for models with
fewer): a model that gives (almost) every image the same class, such as one with random weights, agrees
with itself trivially, so the check cannot tell whether reduced precision keeps its answers."""
CHECK_VERSION = 2
"""Part of the verdict's cache key: bump when the rule changes, so old verdicts are not reused."""
_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class PrecisionVerdict:
    """Outcome of one precision check."""

    backend: str
    device: str
    candidate: str
    """The reduced precision checked (``bf16`` or ``fp16``)."""
    reference: str
    """What it was compared with (``fp32``)."""
    photos_agreeing: int
    photos: int
    varied_agreement: float
    varied: int
    mismatched_photos: tuple[str, ...]
    seconds: float
    reference_classes: int
    """Distinct top-1 classes the reference gave over the whole calibration set."""
    min_reference_classes: int
    """What :attr:`conclusive` needs: :data:`MIN_REFERENCE_CLASSES`, or every class of a smaller model."""

    @property
    def conclusive(self) -> bool:
        """Whether the reference's answers vary enough for agreement to mean anything."""
        return self.reference_classes >= self.min_reference_classes

    @property
    def passed(self) -> bool:
        """True when the reduced precision keeps the answers (and the check could tell)."""
        return self.conclusive and self.photos_agreeing == self.photos and self.varied_agreement >= MIN_AGREEMENT

    def describe(self) -> str:
        """One line for the start-up log."""
        flips = f", changed: {', '.join(self.mismatched_photos)}" if self.mismatched_photos else ""
        measured = (
            f"top-1 photos {self.photos_agreeing}/{self.photos}{flips}, varied set {self.varied_agreement:.1%} of "
            f"{self.varied}"
        )
        if not self.conclusive:
            return (
                f"{self.backend} {self.candidate} not used: inconclusive, {self.reference} gives only "
                f"{self.reference_classes} distinct classes over the calibration set (needs "
                f"{self.min_reference_classes}; random or degenerate weights?), so agreement ({measured}) "
                "proves nothing"
            )
        outcome = "keeps the answers" if self.passed else "changes the answers"
        return (
            f"{self.backend} {self.candidate} {outcome} against {self.reference}: {measured} "
            f"(needs all photos and >= {MIN_AGREEMENT:.0%})"
        )

    def to_json(self) -> str:
        """Serialised for the verdict cache."""
        return json.dumps({**asdict(self), "passed": self.passed}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PrecisionVerdict:
        """Parse :meth:`to_json` output."""
        raw = json.loads(text)
        raw.pop("passed", None)
        raw["mismatched_photos"] = tuple(raw.get("mismatched_photos", ()))
        return cls(**raw)


def calibration_files() -> tuple[list[Path], list[Path]]:
    """The calibration JPEGs: (photos of real objects, everything else), in a fixed order."""
    files = sorted(CALIBRATION_DIR.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no calibration images in {CALIBRATION_DIR}: the package is incomplete")
    photos = [p for p in files if "-photo-" in p.name]
    return photos, [p for p in files if p not in photos]


def views(img: Image.Image, seed: int) -> list[Image.Image]:
    """Eight views of one image: as is, flips, rotations, crops, a harsh re-encode, a low-res copy."""
    w, h = img.size
    rng = np.random.default_rng(seed)
    cx, cy = int(rng.integers(0, w // 3 + 1)), int(rng.integers(0, h // 3 + 1))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=15)
    small = img.resize((max(8, w // 6), max(8, h // 6)), Image.Resampling.BILINEAR)
    return [
        img,
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        img.transpose(Image.Transpose.ROTATE_90),
        img.rotate(25, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0)),
        img.crop((w // 4, h // 4, w - w // 4, h - h // 4)),
        img.crop((cx, cy, cx + (2 * w) // 3, cy + (2 * h) // 3)).transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        small.resize((w, h), Image.Resampling.BICUBIC),
    ]


@functools.lru_cache(maxsize=2)
def calibration_batches(spec: PreprocessSpec) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Model inputs for the check: ``(photos uint8 [P,H,W,3], photo names, varied uint8 [V,H,W,3])``.

    The photos go through the server's own decode path (from their JPEG bytes); the varied set is every
    calibration image's :func:`views`, resized and cropped as the model wants. Remembered per spec (a
    process checks one model; tests check several engines of one): callers must not modify the arrays.
    """
    photo_files, other_files = calibration_files()
    photos = np.stack([decode_image(p.read_bytes(), spec, _MAX_PIXELS) for p in photo_files])
    names = [p.stem.split("-", 2)[2] for p in photo_files]
    varied = []
    for i, path in enumerate([*photo_files, *other_files]):
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        varied.extend(prepare_pil(view, spec) for view in views(rgb, seed=i))
    return photos, names, np.stack(varied)


def logits(engine_infer, batch: np.ndarray, chunk: int) -> np.ndarray:
    """Logits of every row, run in chunks of at most ``chunk`` images."""
    return np.concatenate([np.asarray(engine_infer(batch[i : i + chunk])) for i in range(0, len(batch), chunk)])


def compare(
    reference_top1: tuple[np.ndarray, np.ndarray],
    candidate_top1: tuple[np.ndarray, np.ndarray],
    photo_names: list[str],
    num_labels: int,
    **fields: object,
) -> PrecisionVerdict:
    """Build a verdict from the top-1 classes (photos, varied set) of the reference and the candidate."""
    ref_photos, ref_varied = reference_top1
    cand_photos, cand_varied = candidate_top1
    if ref_photos.shape != cand_photos.shape or ref_varied.shape != cand_varied.shape or not len(ref_varied):
        raise ValueError("reference and candidate must answer the same, non-empty calibration set")
    same = ref_photos == cand_photos
    return PrecisionVerdict(
        photos_agreeing=int(same.sum()),
        photos=len(same),
        varied_agreement=round(float((ref_varied == cand_varied).mean()), 4),
        varied=len(ref_varied),
        mismatched_photos=tuple(n for n, ok in zip(photo_names, same, strict=True) if not ok),
        reference_classes=len(set(ref_photos.tolist()) | set(ref_varied.tolist())),
        min_reference_classes=min(MIN_REFERENCE_CLASSES, num_labels),
        **fields,  # type: ignore[arg-type]
    )


def check(
    reference: Engine,
    candidate: Engine,
    calibration: tuple[np.ndarray, list[str], np.ndarray],
    choice: ServingChoice,
    chunk: int = 32,
    run: Callable[[Callable[[], np.ndarray]], np.ndarray] | None = None,
) -> PrecisionVerdict:
    """Run the calibration set through both loaded engines and compare their top-1 answers.

    Args:
        reference: The engine in ``choice.verify_against`` precision (fp32).
        candidate: The engine in ``choice.precision``.
        calibration: :func:`calibration_batches` for the model.
        choice: The choice being checked.
        chunk: Most images per forward pass.
        run: Runs each forward pass (e.g. on the pipeline's inference thread); default: here.
    """
    run = run or (lambda fn: fn())
    started = time.monotonic()
    photos, names, varied = calibration

    def infer_via_run(engine: Engine) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: run(lambda: engine.infer(batch))

    outputs = []
    for engine in (reference, candidate):
        infer = infer_via_run(engine)
        outputs.append((logits(infer, photos, chunk), logits(infer, varied, chunk)))
    answers = [(p.argmax(axis=1), v.argmax(axis=1)) for p, v in outputs]
    return compare(
        answers[0],
        answers[1],
        names,
        outputs[0][0].shape[1],
        backend=choice.backend,
        device=choice.device,
        candidate=choice.precision,
        reference=str(choice.verify_against),
        seconds=round(time.monotonic() - started, 2),
    )


def calibration_batches_off_thread(spec: PreprocessSpec) -> tuple[np.ndarray, list[str], np.ndarray]:
    """:func:`calibration_batches` on a short-lived thread.

    Preprocessing pins the calling thread's torch to one intra-op thread (it is meant for decode
    threads); the inference thread, which may run torch, must keep its own setting.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="calibration") as pool:
        return pool.submit(calibration_batches, spec).result()


def verdict_path(
    cache_dir: Path, model_hash: str, backend: str, runtime: str, device: str, candidate: str, hardware: str
) -> Path:
    """Where the verdict for this model, backend (and its ``runtime`` version), precision and hardware is cached."""
    calib = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(CALIBRATION_DIR.glob("*.jpg"))))
    calib = calib.hexdigest()
    digest = hashlib.sha256(
        "\0".join(
            [model_hash, backend, runtime, device, candidate, hardware, calib, str(MIN_AGREEMENT), str(CHECK_VERSION)]
        ).encode()
    ).hexdigest()[:24]
    return Path(cache_dir) / f"precision-{backend}-{candidate}-{digest}.json"


def read_verdict(path: Path) -> PrecisionVerdict | None:
    """A cached verdict, or None when absent or unreadable (then the check runs again)."""
    return read_verdict_file(path, PrecisionVerdict.from_json, "precision verdict", "checking again")


def write_verdict(path: Path, verdict: PrecisionVerdict) -> None:
    """Cache a verdict (atomically: write a temp file, then rename); a read-only cache only logs."""
    write_verdict_file(path, verdict.to_json(), "precision verdict", "checks again")
