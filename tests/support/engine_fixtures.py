"""Session fixtures of the engine and GPU tests (a plugin of tests/conftest.py): the default model's spec,
its fp32 reference model, the photo and varied batches and their reference logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.payloads import as_rgb
from predictor.engine.precision_check import views
from predictor.preprocess import PreprocessSpec, decode_image, prepare_pil
from tests.support.references import MAX_PIXELS, PHOTO_NAMES, reference_logits
from tests.support.servers import jpeg_bytes


@pytest.fixture(scope="session")
def lite0_spec(default_model_dir: Path) -> PreprocessSpec:
    """Preprocessing spec of the embedded default model."""
    return PreprocessSpec.from_model_dir(default_model_dir)


@pytest.fixture(scope="session")
def reference_model(default_model_dir: Path) -> torch.nn.Module:
    """The default model as transformers loads it, fp32 eager: the reference every backend must match."""
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(default_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def photo_jpegs(photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The five real-object photos as JPEG bytes (what a client sends)."""
    return {name: jpeg_bytes(photos[name], quality=95) for name in PHOTO_NAMES}


@pytest.fixture(scope="session")
def photo_batch(photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec) -> np.ndarray:
    """The five photos decoded by our path: uint8 ``[5, 224, 224, 3]`` in PHOTO_NAMES order."""
    return np.stack([decode_image(photo_jpegs[n], lite0_spec, MAX_PIXELS) for n in PHOTO_NAMES])


def skimage_samples() -> dict[str, np.ndarray]:
    """Every sample image skimage ships (no download), as RGB uint8: photos, textures, scans, text."""
    from skimage import data

    names = (
        "astronaut binary_blobs brick camera cat cell checkerboard chelsea clock coffee coins colorwheel grass "
        "gravel horse hubble_deep_field immunohistochemistry logo microaneurysms moon page retina rocket "
        "shepp_logan_phantom stereo_motorcycle text"
    ).split()
    out = {}
    for name in names:
        arr = getattr(data, name)()
        out[name] = as_rgb(arr[0] if isinstance(arr, tuple) else arr)
    return out


@pytest.fixture(scope="session")
def varied_batch(lite0_spec: PreprocessSpec) -> np.ndarray:
    """~200 model inputs: 8 variants of each of skimage's 26 sample images, uint8 ``[N,224,224,3]``."""
    arrays = []
    for i, arr in enumerate(skimage_samples().values()):
        for view in views(Image.fromarray(arr), seed=i):
            arrays.append(prepare_pil(view, lite0_spec))
    return np.stack(arrays)


@pytest.fixture(scope="session")
def photo_reference(reference_model: torch.nn.Module, lite0_spec: PreprocessSpec, photo_batch: np.ndarray):
    """fp32 eager logits of the five photos: what every backend and precision is compared with."""
    return reference_logits(reference_model, lite0_spec, photo_batch)


@pytest.fixture(scope="session")
def varied_reference(reference_model: torch.nn.Module, lite0_spec: PreprocessSpec, varied_batch: np.ndarray):
    """fp32 eager logits of the varied set."""
    return reference_logits(reference_model, lite0_spec, varied_batch)


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artefact cache shared by the backend tests (export once per session)."""
    return tmp_path_factory.mktemp("engine-cache")
