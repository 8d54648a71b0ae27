"""Accuracy of the embedded default model through our decoding and engines, and our preprocessing
against the model's own ``AutoImageProcessor``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.config import Settings
from predictor.engine import build_engine, choose, load_engine
from predictor.preprocess import PreprocessSpec, decode_image
from tests.support.references import MAX_PIXELS, PHOTO_NAMES, reference_logits
from tests.support.servers import jpeg_bytes

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_default_model_recognises_cat_and_coffee(
    default_model_dir: Path, photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec, tmp_path: Path
) -> None:
    """The engine ``auto`` picks here, fed by our decoder, labels the cat a cat and the coffee espresso."""
    from transformers import AutoConfig

    id2label = AutoConfig.from_pretrained(default_model_dir).id2label
    engine = load_engine(Settings(model_dir=default_model_dir, cache_dir=tmp_path), lite0_spec).engine
    batch = np.stack([decode_image(photo_jpegs[n], lite0_spec, MAX_PIXELS) for n in ("chelsea", "coffee")])
    top1 = [id2label[int(i)] for i in engine.infer(batch).argmax(axis=1)]
    assert top1[0] in CAT_CLASSES, f"chelsea came back as {top1[0]!r} ({engine.info})"
    assert top1[1] == "espresso", f"coffee came back as {top1[1]!r} ({engine.info})"


def test_default_model_is_relu6_efficientnet_lite(reference_model: torch.nn.Module) -> None:
    timm_model = reference_model.timm_model
    assert reference_model.config.architecture == "tf_efficientnet_lite0"
    acts = {type(m).__name__ for m in timm_model.modules()}
    assert "ReLU6" in acts and "SiLU" not in acts and "Swish" not in acts
    assert len(reference_model.config.id2label) == 1000
    assert reference_model.config.id2label[285] == "Egyptian cat"


def test_preprocessing_matches_auto_image_processor(
    default_model_dir: Path,
    photo_jpegs: dict[str, bytes],
    photo_batch: np.ndarray,
    lite0_spec: PreprocessSpec,
    reference_model: torch.nn.Module,
) -> None:
    """Same JPEG bytes: our decode+resize+crop+normalise vs AutoImageProcessor on the PIL-decoded image."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(default_model_dir)
    pil = [Image.open(io.BytesIO(photo_jpegs[n])).convert("RGB") for n in PHOTO_NAMES]
    theirs_px = processor(pil, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        theirs = reference_model(pixel_values=theirs_px).logits.numpy()
    ours = reference_logits(reference_model, lite0_spec, photo_batch)
    p_ours, p_theirs = _softmax(ours), _softmax(theirs)
    max_diff = float(np.abs(p_ours - p_theirs).max())
    print(f"\npreprocessing vs AutoImageProcessor: max softmax difference {max_diff:.4f}")
    assert list(ours.argmax(1)) == list(theirs.argmax(1)), dict(zip(PHOTO_NAMES, ours.argmax(1), strict=True))
    assert max_diff < 0.02


def test_convnext_style_preprocessing_matches_pixels(tiny_model_dir: Path, photos: dict[str, np.ndarray]) -> None:
    """ResNet-style configs (ConvNextImageProcessor, crop_pct): normalised pixels close to the processor's."""
    from transformers import AutoImageProcessor

    spec = PreprocessSpec.from_model_dir(tiny_model_dir)
    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    for name in PHOTO_NAMES:
        data = jpeg_bytes(photos[name], quality=95)
        ours = spec.normalize(decode_image(data, spec, MAX_PIXELS)[None])
        theirs = processor(Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="np")["pixel_values"]
        assert ours.shape == theirs.shape
        # Resize filters differ slightly (PIL on uint8 vs float); the mean error stays a small fraction
        # of one normalised grey level (1/255/0.225 = 0.017).
        assert float(np.abs(ours - theirs).mean()) < 0.05, name


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_float32_input_path_matches_uint8(
    name: str, photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec, default_model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(model_dir=default_model_dir, backend="torch", precision="fp32")
    engine = build_engine(choose(settings), settings, lite0_spec)
    engine.load()
    x = decode_image(photo_jpegs[name], lite0_spec, MAX_PIXELS)[None]
    np.testing.assert_allclose(engine.infer(x), engine.infer(lite0_spec.normalize(x)), rtol=1e-4, atol=1e-4)
