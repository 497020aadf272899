"""Shared test settings: quiet TensorFlow logs and fixed seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# The read-only reference data (spec, parity files, split lists) beside the checkout.
SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
