"""Backbone pretraining on image-level labels: the demo's stand-in for ImageNet weights.

The command line over it is `python -m wss.pretrain`.

The paper starts every row (supervised and PseudoSeg alike) from an ImageNet-pretrained
backbone. No such weights exist for the demo's narrow Xception, so this trains one as a
multi-label classifier of which demo classes an image contains, on demo images generated
apart from the train and val splits (an index range neither reaches; their masks are only
used to derive the image-level labels, never as pixel labels). It writes a TF1 checkpoint
under DeepLab's names with the backbone's weights, as an ImageNet checkpoint holds them,
so `Experiment.init_checkpoint` loads it as one: the ASPP, decoder and every logits layer
start fresh.

With `Experiment.init_checkpoint = 'demo_backbone'` (gin/demo.gin) training builds it on
first use into ./demo_data/backbone_<hash of the model settings>/, so every row of a
comparison starts from the same weights.
"""

import dataclasses
import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.checkpoint import save_tf1_checkpoint
from deeplab_ext.deeplab import DeepLabV3Plus
from wss import files
from wss.builders import demo
from wss.experiment import PretrainConfig  # noqa: F401  (its home was here)

DEMO_BACKBONE = "demo_backbone"  # the init_checkpoint value that selects this
_MARKER = "PRETRAINED.json"


def image_level_labels(labels, num_classes):
    """Multi-hot [N, num_classes - 1] of the foreground classes present in each mask
    (labels [N, H, W]; background 0 and the ignore label count for nothing)."""
    labels = np.asarray(labels)
    return np.stack(
        [(labels == c).reshape(len(labels), -1).any(axis=1) for c in range(1, num_classes)], axis=1
    ).astype(np.float32)


def pretrain_arrays(config, num_classes=demo.NUM_CLASSES):
    """(images [N, S, S, 3] float32 in [0, 255], multi-hot labels [N, num_classes - 1])."""
    images, masks = demo.padded_arrays(demo.pretrain_items(config.seed, config.num_images))
    return images, image_level_labels(masks, num_classes)


def build_classifier(num_classes, model_settings):
    """The DeepLabv3+ of the model settings; pretraining uses its backbone and the
    backbone's classification head only."""
    config = dataclasses.asdict(model_settings)
    model = DeepLabV3Plus(
        num_classes=num_classes, classification_head=True, cls_keep_prob=1.0, **config
    )
    model.build()
    return model


def classify(model, images, training):
    """Classification logits [B, num_classes - 1] of [0, 255] images."""
    end_points = model.extract_features(images, training=training)
    return model.classify_pooled(model.pool_features(end_points))


def pretrain(model, images, targets, config, log_every=100, print_fn=print):
    """Trains the backbone and its head of `model` on (images, multi-hot targets).
    Returns {'first_loss', 'final_loss', 'train_accuracy', 'seconds'}: mean losses of the
    first and last `log_every` steps, and the per-label accuracy on the last window."""
    tf.random.set_seed(config.seed)
    variables = model.backbone.trainable_variables + model.cls_logits.trainable_variables
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        flip = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.reverse(x, [2]), x)
        with tf.GradientTape() as tape:
            logits = classify(model, x, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.cast(logits > 0, y.dtype), y), tf.float32))
        return loss, accuracy

    rng = np.random.RandomState(config.seed)
    losses, accuracies, first, start = [], [], None, time.time()
    for n in range(1, config.steps + 1):
        pick = rng.choice(len(images), config.batch_size, replace=len(images) < config.batch_size)
        loss, accuracy = step(images[pick], targets[pick])
        losses.append(float(loss))
        accuracies.append(float(accuracy))
        if n % log_every == 0 or n == config.steps:
            final, train_accuracy = float(np.mean(losses)), float(np.mean(accuracies))
            first = final if first is None else first
            print_fn(
                f"pretrain step {n}/{config.steps} loss={final:.4f} "
                f"accuracy={train_accuracy:.3f} ({time.time() - start:.0f}s)"
            )
            losses, accuracies = [], []
    return {
        "first_loss": first,
        "final_loss": final,
        "train_accuracy": train_accuracy,
        "seconds": time.time() - start,
    }


def save_backbone(model, prefix):
    """Writes the backbone's weights under DeepLab's names (the classification head, which
    training leaves out as it does an ImageNet checkpoint's logits, is not kept)."""
    return save_tf1_checkpoint(model.backbone, prefix)


def settings_key(model_settings, config):
    """A short hash of what the pretrained weights depend on."""
    blob = json.dumps(
        [dataclasses.asdict(model_settings), dataclasses.asdict(config)], sort_keys=True
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def ensure_demo_backbone(root, model_settings, config, print_fn=print):
    """The checkpoint prefix of the demo backbone for these model settings and
    PretrainConfig under `root`, pretrained first when absent (or incomplete)."""
    folder = os.path.join(root, f"backbone_{settings_key(model_settings, config)}")
    prefix = os.path.join(folder, "model.ckpt")
    if files.exists(os.path.join(folder, _MARKER)):
        return prefix
    print_fn(
        f"pretraining the demo backbone into {folder} (once; {config.steps} steps of "
        f"{config.batch_size} images)"
    )
    images, targets = pretrain_arrays(config)
    model = build_classifier(demo.NUM_CLASSES, model_settings)
    result = pretrain(model, images, targets, config, print_fn=print_fn)
    save_backbone(model, prefix)
    files.write_json(
        os.path.join(folder, _MARKER),
        {
            "model_settings": dataclasses.asdict(model_settings),
            "pretrain": dataclasses.asdict(config),
            "result": result,
        },
        indent=1,
    )
    return prefix


def resolve_init_checkpoint(
    init_checkpoint, dataset_name, dataset_dir, model_settings=None, config=None, print_fn=print
):
    """`init_checkpoint` itself, or for DEMO_BACKBONE the pretrained demo backbone of
    `model_settings` and PretrainConfig `config` (built next to the demo data on first
    use; both are needed then)."""
    if init_checkpoint != DEMO_BACKBONE:
        return init_checkpoint
    if dataset_name != "demo":
        raise ValueError(
            f"Experiment.init_checkpoint = '{DEMO_BACKBONE}' is pretrained on demo "
            f"images and only serves dataset 'demo', not {dataset_name!r}: give "
            "an ImageNet checkpoint path (README, 'Official checkpoints') or None"
        )
    if model_settings is None or config is None:
        raise ValueError("the demo backbone needs the run's ModelSettings and PretrainConfig")
    return ensure_demo_backbone(dataset_dir, model_settings, config, print_fn=print_fn)
