"""The engine tests' session fixtures (default model spec, fp32 reference model, photo and varied
batches), shared with the GPU tests so that both hold the GPU path to the same inputs and rule."""

from tests.engine.conftest import (  # noqa: F401 - re-exported as fixtures for tests/gpu
    lite0_spec,
    photo_batch,
    photo_jpegs,
    photo_reference,
    reference_model,
    varied_batch,
    varied_reference,
)
