"""Shared test settings and fixtures: quiet logs, fixed seeds, gin cleanup, reference data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib

import gin
import keras
import pytest

from tests import parity_checkpoint

# Reference data shipped with the tests (origin: tests/reference/README.md).
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "reference"
MANIFEST_FILES = {
    "xception_65": "deeplab_xception65_variables.tsv",
    "resnet_v1_50_beta": "resnet_v1_50_beta_variables.tsv",
    "resnet_v1_101_beta": "resnet_v1_101_beta_variables.tsv",
}

# gin bindings of a tiny model and batch that trains in seconds on a CPU (for the tests
# that run the training command line).
TINY_TRAIN_PARAMS = (
    "ModelSettings.width_multiplier = 0.0625",
    "ModelSettings.middle_flow_units = 1",
    "ModelSettings.aspp_depth = 8",
    "ModelSettings.decoder_depth = 8",
    "Experiment.crop_size = 33",
    "Experiment.labeled_batch_size = 2",
    "Experiment.extra_batch_size = 2",
)


def manifest_path(variant):
    """The official variable manifest (name, shape, dtype per line) of a DeepLab backbone."""
    if variant not in MANIFEST_FILES:
        pytest.fail(f"no official variable manifest for model_variant {variant!r}")
    return REFERENCE_DIR / "manifests" / MANIFEST_FILES[variant]


def official_manifest(variant):
    """{TF1 variable name: shape} of the official graph of a DeepLab backbone."""
    return parity_checkpoint.read_manifest(manifest_path(variant))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def clear_gin():
    """Leaves gin's global config empty after the test (for tests that parse gin)."""
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def parity_checkpoints(tmp_path_factory):
    """Builds each parity checkpoint once per session: get(variant, seed) -> TF1 prefix."""
    cache = {}

    def get(variant, seed):
        if (variant, seed) not in cache:
            folder = tmp_path_factory.mktemp(f"parity_{variant}_{seed}")
            cache[(variant, seed)] = parity_checkpoint.write_parity_checkpoint(
                folder / "model.ckpt", official_manifest(variant), seed
            )
        return cache[(variant, seed)]

    return get
