"""The learnability probe's models and loop: how well a model class learns the demo data
with plain supervised cross-entropy, apart from PseudoSeg (wss.bench.learnability runs it).

Demo images generated in memory (no TFRecords, no scale augmentation: whole images padded
to 65 px), left-right flips, Adam 1e-3, the project's L_s (wss.method.losses.supervised_ce),
evaluated by mIoU on the val images.
"""

import dataclasses
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.deeplab import DeepLabV3Plus
from deeplab_ext.resize import resize_bilinear
from wss.builders import demo
from wss.evaluation import metrics
from wss.experiment import ModelSettings
from wss.method import losses


def probe_train_items(seed, num_train, labeled="all"):
    """The demo's train items the probe trains on: every one of the first `num_train`
    ('all'), or only the demo's class-balanced labeled sample among them ('balanced')."""
    items = demo.train_items(seed, num_train)
    if labeled == "balanced":
        chosen = set(demo.labeled_sample(seed, num_train, min(demo.DEMO_LABELED, num_train)).ids)
        items = [t for t in items if t[2] in chosen]
    return items


def upsample(data, factor):
    """(images, labels) enlarged `factor` times as DeepLab's resizing does (image bilinear,
    label nearest, corners aligned): size (S - 1) * factor + 1 stays odd."""
    images, labels = data
    if factor == 1:
        return data
    size = (images.shape[1] - 1) * factor + 1
    images = resize_bilinear(tf.constant(images), [size, size]).numpy()
    labels = tf.compat.v1.image.resize_nearest_neighbor(
        tf.constant(labels)[..., None], [size, size], align_corners=True
    )[..., 0].numpy()
    return images, labels


@keras.saving.register_keras_serializable(package="wss")
class ResizeLike(keras.layers.Layer):
    """Bilinear resize of the first input to the spatial size of the second."""

    def call(self, inputs):
        x, like = inputs
        return resize_bilinear(x, tf.shape(like)[1:3])


def plain_fcn(num_classes, width=32):
    """A small U-Net-like net: two poolings, a dilated bottleneck, skips at full and 1/2
    resolution. Takes [0, 255] images, returns full-resolution logits."""

    def conv(x, filters, rate=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, use_bias=False)(x)
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    full = conv(conv(x, width), width)
    half = conv(conv(keras.layers.MaxPool2D()(full), 2 * width), 2 * width)
    x = keras.layers.MaxPool2D()(half)
    for rate in (1, 2, 4):
        x = conv(x, 4 * width, rate)
    x = conv(keras.layers.Concatenate()([ResizeLike()([x, half]), half]), 2 * width)
    x = conv(keras.layers.Concatenate()([ResizeLike()([x, full]), full]), width)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(x), name="plain_fcn")


@keras.saving.register_keras_serializable(package="wss")
class DeepLabLogits(keras.Model):
    """The DeepLabv3+ of ModelSettings `model_settings` (no classification head) as an
    images -> logits model."""

    def __init__(self, num_classes, model_settings):
        super().__init__(name="demo_deeplab")
        self.num_classes = num_classes
        self.model_settings = model_settings
        config = dataclasses.asdict(model_settings)
        self.deeplab = DeepLabV3Plus(num_classes=num_classes, classification_head=False, **config)

    def build(self, input_shape):
        self.deeplab.build(input_shape)

    def call(self, images, training=False):
        return self.deeplab.forward(images, training=training)["logits"]

    def get_config(self):
        settings = dataclasses.asdict(self.model_settings)
        return {"num_classes": self.num_classes, "model_settings": settings}

    @classmethod
    def from_config(cls, config):
        return cls(config["num_classes"], ModelSettings(**config["model_settings"]))


def train_and_evaluate(model, train, val, steps, batch, seed=0, log_every=250, out=sys.stdout):
    """Trains `model` on (images, labels) `train` and returns its results on `val`:
    {'miou', 'per_class_iou', 'first_loss', 'final_loss', 'seconds'} (losses are means
    over the first and last `log_every` steps)."""
    tf.random.set_seed(seed)
    images, labels = train
    optimizer = keras.optimizers.Adam(1e-3)
    size = images.shape[1]
    model(tf.zeros((1, size, size, 3)), training=True)  # build before the optimizer

    @tf.function
    def step(x, y):
        flip = tf.random.uniform([tf.shape(x)[0], 1, 1]) < 0.5
        x = tf.where(flip[..., None], tf.reverse(x, [2]), x)
        y = tf.where(flip, tf.reverse(y, [2]), y)
        with tf.GradientTape() as tape:
            loss = losses.supervised_ce(model(x, training=True), y)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.RandomState(seed)
    window, first, start = [], None, time.time()
    for n in range(1, steps + 1):
        pick = rng.choice(len(images), batch, replace=len(images) < batch)
        window.append(float(step(images[pick], labels[pick])))
        if n % log_every == 0 or n == steps:
            mean = float(np.mean(window))
            first = mean if first is None else first
            print(
                f"step {n}/{steps} loss={mean:.4f} ({time.time() - start:.0f}s)",
                file=out,
                flush=True,
            )
            final, window = mean, []
    cm = 0
    for i in range(0, len(val[0]), 20):
        logits = model(val[0][i : i + 20], training=False)
        pred = tf.argmax(resize_bilinear(logits, [size, size]), -1).numpy()
        cm = cm + metrics.confusion_matrix(val[1][i : i + 20], pred, logits.shape[-1])
    return {
        "miou": float(metrics.mean_iou(cm)),
        "per_class_iou": [float(v) for v in metrics.per_class_iou(cm)],
        "first_loss": first,
        "final_loss": final,
        "seconds": time.time() - start,
    }
