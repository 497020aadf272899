"""Shared test settings, fixtures and helpers: quiet logs, fixed seeds, gin cleanup,
reference data, and the one tiny model and demo run the tests build.

No test module imports another: what several test files need lives here (constants and
helpers are imported as `from tests.conftest import ...`, fixtures by name).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib
import re

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import parity_checkpoint

# Reference data shipped with the tests (origin: tests/reference/README.md).
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "reference"
MANIFEST_FILES = {
    "xception_65": "deeplab_xception65_variables.tsv",
    "resnet_v1_50_beta": "resnet_v1_50_beta_variables.tsv",
    "resnet_v1_101_beta": "resnet_v1_101_beta_variables.tsv",
}

# ---------------------------------------------------------------- the tiny model
# One tiny DeepLabv3+ (keywords of DeepLabV3Plus and of ModelSettings) that builds and
# steps in seconds on a CPU; every tiny-model form below derives from it.
TINY_MODEL = {
    "width_multiplier": 0.0625,
    "middle_flow_units": 1,
    "aspp_depth": 8,
    "decoder_depth": 8,
}
# The DeepLabV3Plus options (deeplab_ext.backbone.BACKBONE_OPTIONS) each backbone family,
# by name prefix, rejects at a value other than its default: ResNets have no middle flow;
# a keras-hub preset or architecture sizes the encoder, which has no atrous mode.
UNSUPPORTED_BACKBONE_OPTIONS = {
    "xception": (),
    "resnet": ("middle_flow_units",),
    "keras_hub": ("multi_grid", "width_multiplier", "middle_flow_units"),
}
# A tiny training run (keywords of Experiment): crop and global batch sizes.
TINY_RUN = {"crop_size": 33, "labeled_batch_size": 2, "extra_batch_size": 2}
# The demo dataset's class count (wss.builders.demo.NUM_CLASSES).
NUM_CLASSES = 6


# Tiny keras-hub encoders (deeplab_ext/hub_backbone.py architectures) by keras-hub class;
# keras-hub's ResNet needs 64 filters in its first stage.
TINY_HUB_ARCHITECTURES = {
    "MiTBackbone": {
        "class_name": "MiTBackbone",
        "num_layers": 4,
        "layerwise_depths": [1, 1, 1, 1],
        "hidden_dims": [8, 8, 16, 16],
        "layerwise_num_heads": [1, 1, 1, 1],
        "layerwise_sr_ratios": [4, 2, 1, 1],
        "layerwise_patch_sizes": [7, 3, 3, 3],
        "layerwise_strides": [4, 2, 2, 2],
        "max_drop_path_rate": 0.0,
    },
    "DINOV2Backbone": {
        "class_name": "DINOV2Backbone",
        "patch_size": 14,
        "num_layers": 4,
        "hidden_dim": 16,
        "num_heads": 2,
        "intermediate_dim": 32,
        "num_register_tokens": 2,
        "position_embedding_shape": (28, 28, 3),
    },
    "ResNetBackbone": {
        "class_name": "ResNetBackbone",
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 8, 8, 8],
        "stackwise_num_blocks": [1, 1, 1, 1],
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": "basic_block",
        "use_pre_activation": False,
    },
}


def tiny_hub_options(backbone_options, image_size):
    """`backbone_options` of a keras-hub config with its encoder swapped for the tiny one
    of the same family (named by the architecture's class or the preset handle), so that
    configs build without downloading a preset."""
    options = dict(backbone_options)
    preset = str(options.pop("preset", "")).lower()
    name = (options.pop("architecture", None) or {}).get("class_name") or next(
        cls
        for key, cls in (
            ("dinov2", "DINOV2Backbone"),
            ("mit", "MiTBackbone"),
            ("resnet", "ResNetBackbone"),
        )
        if key in preset
    )
    return {**options, "architecture": TINY_HUB_ARCHITECTURES[name], "image_size": image_size}


def gin_bindings(configurable, values):
    """gin binding lines `Configurable.key = value` of a dict of keywords."""
    return tuple(f"{configurable}.{key} = {value!r}" for key, value in values.items())


def gin_param_flags(bindings):
    """The `--gin_param=...` command-line flags of gin binding lines."""
    return [f"--gin_param={binding}" for binding in bindings]


def readme_launch_commands():
    """The commands of the README's <!-- launch-commands --> block (the Cloud TPU, 8-GPU
    and 2-machine launches), one string each, continuation lines joined."""
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    block = re.search(r"<!-- launch-commands -->\n(.*?)<!-- /launch-commands -->", text, re.S)
    assert block, "README.md lost its <!-- launch-commands --> block"
    commands, current = [], ""
    for line in block.group(1).splitlines():
        line = line.strip()
        if not line:
            continue
        current += (" " if current else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


# The tiny model as gin bindings, and with the tiny run (for the tests that train).
TINY_MODEL_PARAMS = gin_bindings("ModelSettings", TINY_MODEL)
TINY_TRAIN_PARAMS = TINY_MODEL_PARAMS + gin_bindings("Experiment", TINY_RUN)
# The gin file of the tiny model on the demo dataset (evaluation, export, vis, ...).
TINY_GIN = "\n".join(TINY_MODEL_PARAMS + gin_bindings("Experiment", {"dataset_name": "demo"}))


def unsupported_backbone_options(backbone):
    """The BACKBONE_OPTIONS backbone `backbone` rejects (UNSUPPORTED_BACKBONE_OPTIONS)."""
    family = [prefix for prefix in UNSUPPORTED_BACKBONE_OPTIONS if backbone.startswith(prefix)]
    if len(family) != 1:
        pytest.fail(f"backbone {backbone!r} needs one entry in UNSUPPORTED_BACKBONE_OPTIONS")
    return UNSUPPORTED_BACKBONE_OPTIONS[family[0]]


def tiny_model(backbone="xception_65"):
    """TINY_MODEL without the sizes `backbone` does not take (ResNet: no middle flow;
    keras_hub: neither, its architecture is sized instead)."""
    unsupported = unsupported_backbone_options(backbone)
    return {key: value for key, value in TINY_MODEL.items() if key not in unsupported}


def tiny_deeplab_config(num_classes=NUM_CLASSES, **overrides):
    """DeepLabV3Plus keywords of the tiny model (PseudoSegModel's `deeplab_config`), with
    the sizes of TINY_MODEL that the backbone (`overrides['backbone']`) takes."""
    backbone = overrides.get("backbone", "xception_65")
    return {"num_classes": num_classes, **tiny_model(backbone), **overrides}


def write_gin(directory):
    """Writes the tiny-model gin file (TINY_GIN) into `directory`; returns its path."""
    path = os.path.join(str(directory), "tiny.gin")
    with open(path, "w") as f:
        f.write(TINY_GIN)
    return path


def build_run_model(config, num_classes=NUM_CLASSES):
    """The (unrestored) model of a parsed RunConfig, with the tests' class count."""
    from wss.model import build_model

    return build_model(num_classes, config.model, config.method)


def make_checkpoint(model_dir, step=5, gin_file=None):
    """Builds the tiny model from gin, perturbs its weights, saves it the driver's way
    (training_checkpoint in a CheckpointManager, prefix 'ckpt') with its
    operative_config.gin; returns (model, prefix)."""
    from wss import restore
    from wss.checkpointing import training_checkpoint

    gin_file = gin_file or write_gin(os.path.dirname(str(model_dir)))
    model = build_run_model(restore.parse_gin([gin_file]))
    rng = np.random.RandomState(step)
    for w in model.weights:  # non-trivial weights, so restoring really matters
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
        else:
            w.assign(w.numpy() + rng.normal(0, 0.3, w.shape).astype(np.float32))
    manager = tf.train.CheckpointManager(
        training_checkpoint(model), str(model_dir), max_to_keep=3, checkpoint_name="ckpt"
    )
    prefix = manager.save(checkpoint_number=step)
    with open(os.path.join(str(model_dir), restore.OPERATIVE_CONFIG), "w") as f:
        f.write(TINY_GIN)
    return model, prefix


def random_step_batches(num_classes, batch_size=2, crop=33, seed=0):
    """Random (labeled, extra) batches for one PseudoSegModel.train_step: uniform images,
    uniform labels, every pixel valid, every class present at image level; the extra batch
    is the same images with the strong view equal to the image and all marked labeled."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, crop, crop)
    labeled = {
        "image": rng.uniform(0, 255, shape + (3,)).astype("float32"),
        "label": rng.integers(0, num_classes, shape + (1,)).astype("int32"),
        "valid": np.ones(shape + (1,), "float32"),
        "image_labels": np.ones((batch_size, num_classes - 1), "float32"),
    }
    extra = dict(labeled, strong=labeled["image"], has_label=np.ones([batch_size], "float32"))
    return labeled, extra


def make_demo(directory, num_val=6):
    """A small demo dataset (marked complete, so ensure_demo_dataset reuses it)."""
    from wss.builders import demo

    demo.build_demo_dataset(str(directory), num_train=30, num_val=num_val, num_labeled=12)
    return str(directory)


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
    """Leaves gin's global config empty after the test (for tests that parse gin). A file
    whose every test parses gin says `pytestmark = pytest.mark.usefixtures("clear_gin")`."""
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The full demo dataset (wss.builders.demo defaults), built once per session; tests only
    read it (the demo backbone test caches its pretrained backbone there)."""
    from wss.builders.demo import ensure_demo_dataset

    return ensure_demo_dataset(str(tmp_path_factory.mktemp("demo")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One trained-looking tiny run, built once per session and only read by the tests:
    {'root', 'data' (demo dataset, 6 val images, in root/demo_data), 'gin' (root/tiny.gin),
    'model_dir' (root/model: checkpoint ckpt-5 and operative_config.gin), 'model' (the
    in-memory model saved there), 'prefix', 'step'}. gin is left empty."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = make_demo(root / "demo_data")
    model, prefix = make_checkpoint(root / "model", step=5)
    gin.clear_config()
    return {
        "root": root,
        "data": data,
        "gin": os.path.join(str(root), "tiny.gin"),
        "model_dir": root / "model",
        "model": model,
        "prefix": prefix,
        "step": 5,
    }


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


@pytest.fixture(scope="session")
def gcs_rig():
    """A local Google Cloud Storage (tests/gcs_rig.py: emulator behind a TLS proxy on
    loopback ports), started once per test process and stopped at its end."""
    from tests import gcs_rig as rig_module

    rig = rig_module.start()
    yield rig
    rig.stop()


@pytest.fixture
def gcs(gcs_rig):
    """The rig for one test: `.root` a fresh gs:// folder, `.env` the environment for
    subprocesses that reach it, `.rig` faults and traffic; faults are off again after."""
    import types

    gcs_rig.set_faults()
    yield types.SimpleNamespace(
        rig=gcs_rig, root=gcs_rig.new_bucket_path(), env=gcs_rig.subprocess_env()
    )
    gcs_rig.set_faults()
