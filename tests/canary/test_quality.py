"""The answer comparison and the reference set's judgement (pure), checked against independent references."""

from __future__ import annotations

import pytest
from scipy.spatial.distance import jensenshannon

from classifier_canary.analysis import Analysis, Measurement, RevisionStats, Verdict, evaluate
from classifier_canary.config import CanaryConfig
from classifier_canary.errors import CanaryInputError
from classifier_canary.quality import AnswerStats, js_divergence, live_quality
from classifier_canary.reference import ReferenceResult, ReferenceSet, compare, reference_reasons, revision_urls


def cfg(**kw) -> CanaryConfig:
    return CanaryConfig(
        **{"isvc": "classifier", "prometheus_url": "http://p:9090", "min_quality_predictions": 100, **kw}
    )


def rev(name: str) -> RevisionStats:
    return RevisionStats(name, 1000.0, 0.0, 0.0, 0.1, ("v1",), ("float32",), 0.0)


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ({"cat": 60, "dog": 40}, {"cat": 60, "dog": 40}),
        ({"cat": 60, "dog": 40}, {"cat": 30, "dog": 70}),
        ({"cat": 10}, {"dog": 10}),
        ({"a": 1, "b": 2, "c": 3}, {"b": 5, "c": 1, "d": 9}),
    ],
)
def test_js_divergence_is_scipys(p, q):
    keys = sorted(p.keys() | q.keys())
    reference = jensenshannon([p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys], base=2) ** 2
    assert js_divergence(p, q) == pytest.approx(reference, abs=1e-12)


def test_js_divergence_refuses_empty_counts():
    with pytest.raises(ValueError, match="need answers"):
        js_divergence({}, {"cat": 1})


def test_live_quality_judges_mix_confidence_and_sample_size():
    stable = AnswerStats(500, {"espresso": 300, "tiger cat": 200}, 0.80)
    same = AnswerStats(520, {"espresso": 310, "tiger cat": 210}, 0.79)
    assert live_quality(same, stable, cfg()) == ("ok", [])
    permuted = AnswerStats(500, {"eggnog": 300, "tiger": 200}, 0.80)
    outcome, reasons = live_quality(permuted, stable, cfg())
    assert outcome == "fail" and reasons[0].startswith("class mix differs from the stable's: Jensen-Shannon 1.000")
    assert "'espresso' 60%->0%" in reasons[0]
    unsure = AnswerStats(500, {"espresso": 300, "tiger cat": 200}, 0.60)
    assert live_quality(unsure, stable, cfg())[1] == [
        "mean top-1 confidence 0.600 vs the stable's 0.800: shift -0.200 > ±0.05"
    ]
    few = AnswerStats(50, {"espresso": 50}, 0.8)
    assert live_quality(few, stable, cfg())[0] == "no-data"
    assert live_quality(AnswerStats(), stable, cfg())[0] == "fail"  # no series: an old predictor, never a pass


def test_answers_decide_a_verdict_named_after_them():
    stable = AnswerStats(500, {"espresso": 500}, 0.8)
    wrong = Measurement(600, rev("c"), rev("s"), answers=(AnswerStats(500, {"eggnog": 500}, 0.8), stable))
    d = Analysis(cfg(max_failed_checks=1)).judge(wrong)
    assert d.verdict == Verdict.ROLLBACK and d.decided_by == ("answers",)
    assert d.checks == {"monitoring": "ok", "http": "ok", "outside": "ok", "model": "ok", "answers": "fail"}
    right = Measurement(600, rev("c"), rev("s"), answers=(stable, stable))
    d = Analysis(cfg()).judge(right)
    assert d.verdict == Verdict.PASS and d.decided_by == ("monitoring", "http", "outside", "model", "answers")


def test_outside_checks_queue_proxy_and_restarts():
    proxied = RevisionStats("c", 1000.0, 0.0, 0.0, 0.1, ("v1",), ("float32",), 0.0, 1000.0, 0.05, 0.45)
    stable = RevisionStats("s", 1000.0, 0.0, 0.0, 0.1, ("v1",), ("float32",), 0.0, 1000.0, 0.0, 0.15)
    outcome, reasons = evaluate(Measurement(600, proxied, stable), cfg())
    assert outcome == "fail"
    assert reasons[0].startswith("queue-proxy: canary error ratio 5.00% > 1.00%")
    assert reasons[1].startswith("queue-proxy: canary p95 450ms is x3.00 the stable's 150ms")
    restarted = RevisionStats("c", 1000.0, 0.0, 0.0, 0.1, ("v1",), ("float32",), 0.0, restarts=2.0)
    assert evaluate(Measurement(600, restarted, rev("s")), cfg())[1] == ["canary pods restarted 2 times in the window"]


def test_reference_set_reads_images_and_labels(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"b")
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text('image,label\na.png,tench\n# a comment\nb.jpg,"crane, bird"\n')
    ref = ReferenceSet.load(tmp_path, labels)
    assert list(ref.images) == ["a.png", "b.jpg"] and ref.expected == {"a.png": "tench", "b.jpg": "crane, bird"}
    labels.write_text("c.jpg,tench\n")
    with pytest.raises(CanaryInputError, match="line 1: expected `image,label` naming an image"):
        ReferenceSet.load(tmp_path, labels)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CanaryInputError, match="no image"):
        ReferenceSet.load(tmp_path / "empty", None)


def test_reference_compare_and_reasons():
    ref = ReferenceSet({f"{i}.jpg": b"" for i in range(4)}, {"0.jpg": "a", "1.jpg": "b", "2.jpg": "c", "3.jpg": "d"})
    stable = {"0.jpg": "a", "1.jpg": "b", "2.jpg": "c", "3.jpg": "x"}
    canary = {"0.jpg": "a", "1.jpg": "z", "2.jpg": "c", "3.jpg": "x"}
    r = compare(ref, stable, canary)
    assert (r.agreement, r.stable_accuracy, r.canary_accuracy) == (0.75, 0.75, 0.5)
    assert r.changed == ("1.jpg: 'b' -> 'z'",)
    reasons = reference_reasons(r, cfg())
    assert (
        reasons[0]
        == "reference set: canary agrees with the stable on 75.0% of 4 images < 95%; changed: 1.jpg: 'b' -> 'z'"
    )
    assert reasons[1].startswith("reference set: canary accuracy 50.0% < the stable's 75.0% - 2%")
    assert reference_reasons(r, cfg(min_reference_agreement=0.75, max_reference_accuracy_drop=0.25)) == []
    assert reference_reasons(ReferenceResult(4, problem="canary at x did not answer"), cfg()) == [
        "reference set: canary at x did not answer"
    ]


def test_reference_failure_before_traffic_rolls_back_at_step_0():
    a = Analysis(cfg())
    bad = ReferenceResult(4, 0.0, None, None, ("a.jpg: 'x' -> 'y'",))
    d = a.before_traffic(bad)
    assert d is not None and d.verdict == Verdict.ROLLBACK and d.step == 0 and d.decided_by == ("reference",)
    assert Analysis(cfg()).before_traffic(ReferenceResult(4, 1.0)) is None


def test_revision_urls_default_to_the_revisions_own_services():
    c = cfg(namespace="ml")
    assert revision_urls(c, "Knative", "demo-predictor-00001", "demo-predictor-00002") == (
        "http://demo-predictor-00001.ml.svc.cluster.local",
        "http://demo-predictor-00002.ml.svc.cluster.local",
    )
    assert revision_urls(c, "Standard", "stable", "canary") == (
        "http://classifier-predictor.ml.svc.cluster.local",
        "http://classifier-predictor-canary.ml.svc.cluster.local",
    )
    assert revision_urls(cfg(canary_url="http://c:1"), "Knative", "s", "c")[1] == "http://c:1"
