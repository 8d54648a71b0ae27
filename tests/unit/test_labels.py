"""Labels are read from config.json without transformers, and agree with what AutoConfig derives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictor.lifecycle import load_labels


def _auto_config_labels(model_dir: Path) -> list[str]:
    from transformers import AutoConfig

    id2label = AutoConfig.from_pretrained(str(model_dir)).id2label
    return [id2label[i] for i in range(len(id2label))]


@pytest.mark.parametrize("which", ["default", "tiny"])
def test_labels_match_auto_config(which: str, default_model_dir: Path, tiny_model_dir: Path) -> None:
    model_dir = default_model_dir if which == "default" else tiny_model_dir
    labels = load_labels(model_dir)
    assert labels == _auto_config_labels(model_dir)
    assert len(labels) == 1000


def test_default_model_uses_timm_label_names(default_model_dir: Path) -> None:
    cfg = json.loads((default_model_dir / "config.json").read_text())
    assert "id2label" not in cfg and "label_names" in cfg  # the timm wrapper's own form
    assert load_labels(default_model_dir)[285] == "Egyptian cat"


def test_a_config_without_labels_falls_back_to_auto_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    for key in ("id2label", "label2id"):
        cfg.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_labels(tmp_path) == _auto_config_labels(tmp_path)
