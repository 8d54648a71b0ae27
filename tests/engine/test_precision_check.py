"""The load-time precision check: auto serves reduced precision only where it keeps this model's answers."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from predictor.config import Settings
from predictor.engine import build_engine, choose, load_engine
from predictor.engine.cpu import detect_cpu
from predictor.engine.precision_check import (
    MIN_AGREEMENT,
    PrecisionVerdict,
    calibration_batches,
    calibration_files,
    compare,
    logits,
    read_verdict,
    verdict_path,
)
from predictor.preprocess import PreprocessSpec

NATIVE_BF16 = detect_cpu().native_bf16
FIELDS = dict(backend="openvino", device="cpu", candidate="bf16", reference="fp32", seconds=1.0)
NAMES = ["chelsea", "coffee", "rocket", "astronaut"]


def _answers(photos: list[int], varied: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(photos), np.array(varied)


def test_identical_answers_pass() -> None:
    ref = _answers([1, 2, 3, 4], list(range(100)))
    verdict = compare(ref, ref, NAMES, 1000, **FIELDS)
    assert verdict.passed and verdict.photos_agreeing == 4 and verdict.varied_agreement == 1.0
    assert "keeps the answers" in verdict.describe()


def test_one_changed_photo_fails_whatever_the_varied_set_says() -> None:
    varied = list(range(100))
    verdict = compare(_answers([1, 2, 3, 4], varied), _answers([1, 9, 3, 4], varied), NAMES, 1000, **FIELDS)
    assert verdict.conclusive and not verdict.passed and verdict.mismatched_photos == ("coffee",)
    assert "changed: coffee" in verdict.describe()


@pytest.mark.parametrize(("flips", "passed"), [(5, True), (6, False)])
def test_varied_agreement_threshold(flips: int, passed: bool) -> None:
    ref_varied = list(range(100))
    cand_varied = [-1] * flips + ref_varied[flips:]
    verdict = compare(_answers([0, 1, 2, 3], ref_varied), _answers([0, 1, 2, 3], cand_varied), NAMES, 1000, **FIELDS)
    assert verdict.varied_agreement == (100 - flips) / 100
    assert verdict.passed is passed
    assert (verdict.varied_agreement >= MIN_AGREEMENT) is passed


def test_a_model_that_answers_one_class_for_everything_is_inconclusive() -> None:
    """Random weights: fp32 and bf16 both say "class 7" for every image and agree 100 %, which proves nothing."""
    same = _answers([7, 7, 7, 7], [7] * 99 + [3])
    verdict = compare(same, same, NAMES, 1000, **FIELDS)
    assert verdict.varied_agreement == 1.0 and verdict.reference_classes == 2
    assert not verdict.conclusive and not verdict.passed
    assert "inconclusive" in verdict.describe() and "2 distinct classes" in verdict.describe()
    # a model with fewer classes than the bar needs all of its classes to show up
    two_class = compare(_answers([0, 1, 0, 1], [0, 1] * 50), _answers([0, 1, 0, 1], [0, 1] * 50), NAMES, 2, **FIELDS)
    assert two_class.min_reference_classes == 2 and two_class.passed


def test_mismatched_answer_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="same, non-empty"):
        compare(_answers([1, 2, 3, 4], [1, 2]), _answers([1, 2, 3, 4], [1]), NAMES, 1000, **FIELDS)


def test_verdict_round_trips_and_bad_files_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    verdict = compare(_answers([1, 2, 3, 4], [1, 2]), _answers([1, 2, 3, 5], [1, 2]), NAMES, 1000, **FIELDS)
    path = tmp_path / "v.json"
    path.write_text(verdict.to_json())
    assert read_verdict(path) == verdict
    assert read_verdict(tmp_path / "missing.json") is None
    path.write_text('{"backend": "openvino"')
    with caplog.at_level(logging.WARNING):
        assert read_verdict(path) is None
    assert "checking again" in caplog.text


def test_verdict_path_is_keyed_by_everything_the_answer_depends_on(tmp_path: Path) -> None:
    base = dict(
        model_hash="a" * 64,
        backend="openvino",
        runtime="2026.4.1",
        device="cpu",
        candidate="bf16",
        hardware="cpu X (amx_bf16)",
    )
    path = verdict_path(tmp_path, **base)
    assert path == verdict_path(tmp_path, **base) and path.parent == tmp_path
    changes = [("model_hash", "b" * 64), ("backend", "torch"), ("runtime", "2025.0"), ("candidate", "fp16")]
    for key, other in [*changes, ("device", "cuda"), ("hardware", "cpu Y")]:
        assert verdict_path(tmp_path, **{**base, key: other}) != path, key


def test_calibration_set(default_model_dir: Path) -> None:
    photos, others = calibration_files()
    assert [p.name.split("-", 2)[2] for p in photos] == [f"{n}.jpg" for n in NAMES]
    assert len(others) >= 12
    spec = PreprocessSpec.from_model_dir(default_model_dir)
    photo_batch, names, varied = calibration_batches(spec)
    assert names == NAMES
    assert photo_batch.shape == (4, *spec.crop_hw, 3) and photo_batch.dtype == np.uint8
    assert varied.shape == (8 * (len(photos) + len(others)), *spec.crop_hw, 3) and varied.dtype == np.uint8
    assert len({v.tobytes() for v in varied}) == len(varied)  # eight distinct views of each image


@pytest.fixture(scope="module")
def checked(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default model loaded by ``auto`` with a fresh cache: the check runs (on a native-bf16 CPU)."""
    cache = tmp_path_factory.mktemp("precision-cache")
    settings = Settings(model_dir=default_model_dir, cache_dir=cache, device="cpu")
    spec = PreprocessSpec.from_model_dir(default_model_dir)
    loaded = load_engine(settings, spec)
    served = loaded.engine.info.dtype
    loaded.engine.close()
    return settings, spec, loaded, served, cache


def test_auto_serves_what_the_check_decided(checked) -> None:
    _, _, loaded, served, cache = checked
    if not NATIVE_BF16:  # CPUs differ: without native bf16 there is nothing to check, fp32 is served
        assert loaded.verdict is None and served == "float32"
        return
    verdict = loaded.verdict
    assert verdict is not None and not loaded.verdict_cached
    assert (verdict.backend, verdict.candidate, verdict.reference) == ("openvino", "bf16", "fp32")
    assert verdict.photos == 4 and verdict.varied == 136
    assert verdict.conclusive and verdict.reference_classes >= 40  # a real model: many different answers
    assert served == ("bfloat16" if verdict.passed else "float32")
    assert loaded.choice.precision == ("bf16" if verdict.passed else "fp32") and loaded.choice.verify_against is None
    assert [read_verdict(p) for p in cache.glob("precision-*.json")] == [verdict]


def test_the_verdict_reports_the_real_agreement(checked) -> None:
    """Recompute the comparison with two independently built engines: same numbers as the verdict."""
    settings, spec, loaded, _, _ = checked
    if not NATIVE_BF16:
        assert loaded.verdict is None
        return
    choice = choose(settings)
    photos, _, varied = calibration_batches(spec)
    answers = []
    for precision in ("fp32", "bf16"):
        engine = build_engine(replace(choice, precision=precision, verify_against=None), settings, spec)
        engine.load()
        answers.append((logits(engine.infer, photos, 32).argmax(1), logits(engine.infer, varied, 32).argmax(1)))
        engine.close()
    (ref_photos, ref_varied), (cand_photos, cand_varied) = answers
    assert loaded.verdict.photos_agreeing == int((ref_photos == cand_photos).sum())
    assert loaded.verdict.varied_agreement == pytest.approx(float((ref_varied == cand_varied).mean()), abs=1e-4)


def test_a_restart_reads_the_cached_verdict(checked) -> None:
    settings, spec, first, served, _ = checked
    again = load_engine(settings, spec)
    again.engine.close()
    if first.verdict is None:
        assert again.verdict is None
        return
    assert again.verdict_cached and again.verdict == first.verdict
    assert again.engine.info.dtype == served


def test_a_passing_verdict_serves_bf16_and_a_corrupt_one_is_checked_again(checked) -> None:
    settings, spec, first, _, cache = checked
    if not NATIVE_BF16:  # auto never considers bf16 here: nothing is cached
        assert first.verdict is None and not list(cache.glob("precision-*.json"))
        return
    (path,) = cache.glob("precision-*.json")
    passing = PrecisionVerdict(**{**first.verdict.__dict__, "photos_agreeing": 4, "varied_agreement": 1.0})
    path.write_text(passing.to_json())
    loaded = load_engine(settings, spec)
    try:
        assert loaded.verdict_cached and loaded.verdict.passed
        assert loaded.engine.info.dtype == "bfloat16" and loaded.choice.precision == "bf16"
    finally:
        loaded.engine.close()
    path.write_text("not json")
    rechecked = load_engine(settings, spec)
    rechecked.engine.close()
    assert not rechecked.verdict_cached
    assert replace(rechecked.verdict, seconds=0) == replace(first.verdict, seconds=0)  # the same answers again
    assert read_verdict(path) == rechecked.verdict


def test_random_weights_are_served_in_fp32_whatever_bf16_does(tmp_path: Path) -> None:
    """A full-size ResNet-50 with random weights says one class for everything: the check is inconclusive."""
    from models.random_resnet import build_random_resnet

    model_dir = build_random_resnet(tmp_path / "resnet50-random", size="full")
    settings = Settings(model_dir=model_dir, cache_dir=tmp_path / "cache", device="cpu")
    loaded = load_engine(settings, PreprocessSpec.from_model_dir(model_dir))
    served = loaded.engine.info.dtype
    loaded.engine.close()
    assert served == "float32"
    if NATIVE_BF16:
        assert loaded.verdict is not None and not loaded.verdict.conclusive, loaded.verdict
        assert "inconclusive" in loaded.verdict.describe()


async def test_the_pipeline_is_ready_only_once_the_check_has_decided(tiny_model_dir: Path, tmp_path: Path):
    """Ready means ready: the check runs inside ``load()``, so the first request is served by the engine the
    check chose (one ``model_info`` series, never a later swap), and a restart reads the cached verdict."""
    from predictor.pipeline import Pipeline
    from tests.support.servers import jpeg_bytes

    settings = Settings(model_dir=tiny_model_dir, cache_dir=tmp_path, device="cpu")
    pipeline = Pipeline(settings)
    pipeline.load()
    await pipeline.start()
    try:
        runtime = pipeline.runtime
        verdict = runtime.precision_verdict
        if not NATIVE_BF16:
            assert verdict is None and pipeline.engine_info.dtype == "float32"
            return
        assert verdict is not None and pipeline.ready
        assert pipeline.engine_info.dtype == ("bfloat16" if verdict.passed else "float32"), verdict.describe()
        assert runtime.choice.verify_against is None and "precision check" in runtime.choice.reason
        image = jpeg_bytes(np.full((120, 160, 3), 90, np.uint8))
        assert len(await pipeline.classify([image, image], top_k=1)) == 2
        (labels,) = [s.labels for m in pipeline.metrics.model_info.collect() for s in m.samples if s.value == 1]
        assert labels["dtype"] == pipeline.engine_info.dtype
    finally:
        await pipeline.close()
    restarted = Pipeline(settings)
    restarted.load()
    try:
        assert restarted.runtime.precision_verdict == verdict
        assert restarted.engine_info.dtype == pipeline.engine_info.dtype
        assert "precision check (cached)" in restarted.runtime.choice.reason
    finally:
        await restarted.close()
