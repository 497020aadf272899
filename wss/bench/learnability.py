"""Learnability probe: how well can a model class learn the demo data, apart from PseudoSeg?

    python -m wss.bench.learnability --model=demo_deeplab|plain_fcn \
        [--labeled=all|balanced] [--steps=1500] [--batch=16] [--input_scale=1] \
        [--gin_file=gin/demo.gin]

Trains one model with plain supervised cross-entropy on demo images generated in memory
(no TFRecords, no scale augmentation: whole images padded to 65 px, left-right flips, Adam
1e-3), then prints the val mIoU, per-class IoU and the final training loss.
'demo_deeplab' is the DeepLabv3+ of the gin config (the demo's small Xception by default);
'plain_fcn' is a small U-Net-like conv net at full resolution, a reference for what the
data allows within the same budget. `--labeled=all` uses every train mask, `balanced` the
demo's 32 labeled images. `--input_scale=2` enlarges images and masks twice (as DeepLab's
resizing: bilinear / nearest, corners aligned), evaluated at that size. The loss is the
project's L_s (wss.method.losses.supervised_ce).
This tells a model or schedule limit from a data limit (README, "Demo results on this
machine": the demo's model, not its data, is the limit).
"""

import dataclasses
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from deeplab_ext.deeplab import DeepLabV3Plus
from deeplab_ext.resize import resize_bilinear
from wss import program
from wss.data import demo
from wss.evaluation import metrics
from wss.experiment import parse_run_config
from wss.method import losses


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


class DeepLabLogits(keras.Model):
    """The DeepLabv3+ of ModelSettings `model_settings` (no classification head) as an
    images -> logits model."""

    def __init__(self, num_classes, model_settings):
        super().__init__(name="demo_deeplab")
        config = dataclasses.asdict(model_settings)
        self.deeplab = DeepLabV3Plus(num_classes=num_classes, classification_head=False, **config)

    def build(self, input_shape):
        self.deeplab.build(input_shape)

    def call(self, images, training=False):
        return self.deeplab.forward(images, training=training)["logits"]


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


FLAGS = program.flag_values()
flags.DEFINE_enum(
    "model", "demo_deeplab", ["demo_deeplab", "plain_fcn"], "Model to train.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "labeled",
    "all",
    ["all", "balanced"],
    "Train masks: every train image, or the demo's class-balanced labeled set.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("steps", 1500, "Training steps.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 16, "Images per step.", flag_values=FLAGS)
flags.DEFINE_integer("num_train", demo.DEMO_TRAIN, "Train images generated.", flag_values=FLAGS)
flags.DEFINE_integer(
    "input_scale",
    1,
    "Enlarge every image (and mask) this many times "
    "before training and evaluation (objects of the demo are 12-36 px, "
    "small for a stride-16 backbone).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_val", demo.DEMO_VAL, "Val images generated.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "Demo data seed (the demo's is 0) and training seed.", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "gin_file", ["gin/demo.gin"], "Config of demo_deeplab's model.", flag_values=FLAGS
)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.", flag_values=FLAGS)


def main(argv=None):
    """Command line entry; returns the result dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    for name in ("steps", "batch", "num_train", "num_val", "input_scale"):
        if fv[name].value < 1:
            raise program.UsageError(f"--{name}={fv[name].value}: must be at least 1.")
    train_items = demo.train_items(fv.seed, fv.num_train)
    if fv.labeled == "balanced":
        chosen = set(
            demo.labeled_sample(fv.seed, fv.num_train, min(demo.DEMO_LABELED, fv.num_train)).ids
        )
        train_items = [t for t in train_items if t[2] in chosen]
    if fv.model == "demo_deeplab":
        config = parse_run_config(fv.gin_file, fv.gin_param)
        model = DeepLabLogits(demo.NUM_CLASSES, config.model)
    else:
        model = plain_fcn(demo.NUM_CLASSES)
    print(
        f"{fv.model}: {len(train_items)} train masks, {fv.steps} steps of "
        f"{fv.batch} images, input scale {fv.input_scale}",
        flush=True,
    )
    result = train_and_evaluate(
        model,
        upsample(demo.padded_arrays(train_items), fv.input_scale),
        upsample(demo.padded_arrays(demo.val_items(fv.seed, fv.num_val)), fv.input_scale),
        fv.steps,
        fv.batch,
        seed=fv.seed,
    )
    ious = " ".join(f"{100 * v:.1f}" for v in result["per_class_iou"])
    print(
        f"{fv.model} ({fv.labeled}): val mIoU {100 * result['miou']:.2f}% "
        f"[{ious}], training loss {result['first_loss']:.3f} -> "
        f"{result['final_loss']:.3f}, {result['seconds']:.0f}s"
    )
    return result


if __name__ == "__main__":
    program.run(main, FLAGS)
