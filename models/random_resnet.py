"""Build a Hugging Face ResNet with random weights, for protocol tests and benchmarks.

* ``tiny``: a few channels and a 64x64 input, forward pass in milliseconds (protocol tests);
* ``full``: ``ResNetConfig()`` defaults, i.e. ResNet-50's cost at 224x224 (benchmarks).

The directory looks like ``microsoft/resnet-50``'s: ``config.json`` with ``id2label``, safetensors
weights and a ``ConvNextImageProcessor`` ``preprocessor_config.json`` (shortest edge, ``crop_pct``).

Usage::

    python -m models.random_resnet --out /tmp/resnet-tiny --size tiny
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Size = Literal["tiny", "full"]
TINY_INPUT = 64
"""Input height and width of the tiny model."""


def _preprocessor_config(shortest_edge: int) -> dict:
    """A preprocessor config like microsoft/resnet-50's (crop_pct rule, bilinear resample)."""
    return {
        "crop_pct": 0.875,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "ConvNextImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": shortest_edge},
    }


def build_random_resnet(out_dir: Path, size: Size = "tiny", seed: int = 0, num_labels: int = 1000) -> Path:
    """Write a randomly initialised ``ResNetForImageClassification`` directory.

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        size: ``"tiny"`` (fast tests) or ``"full"`` (ResNet-50 cost).
        seed: Seed of the weight initialisation; the same seed gives the same weights.
        num_labels: Number of classes; labels are ``class_0`` ... unless 1000 (then still synthetic).

    Returns:
        ``out_dir``.
    """
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    id2label = {i: f"class_{i}" for i in range(num_labels)}
    common = {"num_labels": num_labels, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if size == "tiny":
        config = ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic", **common
        )
        shortest_edge = TINY_INPUT
    else:
        config = ResNetConfig(**common)
        shortest_edge = 224
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config).eval()
    if size == "tiny":
        # Random init gives near-uniform logits; a larger head spreads the scores so top-k is stable.
        with torch.no_grad():
            model.classifier[-1].weight.mul_(20.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for path in out_dir.iterdir():
        path.chmod(0o644)  # safetensors writes owner-only; the server may run as another user
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor_config(shortest_edge), indent=2, sort_keys=True) + "\n"
    )
    logger.info("wrote random %s ResNet to %s", size, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Build a random-weight Hugging Face ResNet.")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="tiny (tests) or full (ResNet-50)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--num_labels", type=int, default=1000, help="number of classes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_random_resnet(args.out, args.size, args.seed, args.num_labels)


if __name__ == "__main__":
    main()
