"""Loading a Hugging Face image classifier as a plain ``pixel_values -> logits`` torch module.

Every backend starts from here: the torch engine runs the module, the exporting engines trace it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class LogitsOnly(torch.nn.Module):
    """Wraps a Hugging Face classifier so ``forward(pixel_values)`` returns the logits tensor only.

    A plain tensor output is what tracing exporters (ONNX, OpenVINO) and ``torch.compile`` want.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``float [N,3,H,W]`` normalised input → ``[N, num_labels]`` logits."""
        return self.model(pixel_values=pixel_values, return_dict=True).logits


def load_logits_module(model_dir: Path) -> LogitsOnly:
    """Load ``model_dir`` with ``AutoModelForImageClassification`` as an fp32 eval module returning logits.

    Raises:
        ValueError: the directory does not hold a loadable image-classification model.
    """
    from transformers import AutoModelForImageClassification

    try:
        hf_model = AutoModelForImageClassification.from_pretrained(Path(model_dir), dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{model_dir} does not hold a loadable image-classification model: {e}") from e
    return LogitsOnly(hf_model.eval()).eval()
