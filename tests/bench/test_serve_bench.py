"""What serve_bench's report says about the model it served."""

from __future__ import annotations

from pathlib import Path

from bench.serve_bench import describe_model


def test_the_report_names_the_model_that_was_served(default_model_dir: Path, tiny_model_dir: Path) -> None:
    assert describe_model(default_model_dir, built=False) == (
        f"{default_model_dir.name}: TimmWrapperForImageClassification, 224x224"
    )
    tiny = describe_model(tiny_model_dir, built=False)
    assert tiny.startswith(f"{tiny_model_dir.name}: ResNetForImageClassification"), tiny
    assert describe_model(tiny_model_dir, built=True).startswith("random-weight ResNet-50")  # its own default


def test_a_model_dir_without_config_is_described_not_fatal(tmp_path: Path) -> None:
    assert describe_model(tmp_path, built=False).startswith(f"{tmp_path.name} (config.json unreadable")
