"""Converts an official DeepLab TF1 checkpoint into Keras weights for our model.

    python -m deeplab_ext.convert_checkpoint --tf1_checkpoint=xception_65/model.ckpt \
        --output=xception_65_imagenet.weights.h5 --skip_logits

Builds the model the flags describe, loads the checkpoint through the strict loader,
optionally runs one forward pass as a sanity check, saves `.weights.h5`, and prints how
many tensors were loaded, skipped, missing and unused.
"""

from absl import flags

from wss import program

FLAGS = program.flag_values()
flags.DEFINE_string(
    "tf1_checkpoint", None, "TF1 checkpoint prefix or directory.", flag_values=FLAGS
)
flags.DEFINE_string("output", None, "Output path ending in .weights.h5.", flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 21, "Classes including background.", flag_values=FLAGS)
flags.DEFINE_string("backbone", "xception_65", "Backbone variant.", flag_values=FLAGS)
flags.DEFINE_integer("output_stride", 16, "Output stride 8, 16 or 32.", flag_values=FLAGS)
flags.DEFINE_list("atrous_rates", ["6", "12", "18"], "ASPP atrous rates.", flag_values=FLAGS)
flags.DEFINE_integer(
    "decoder_output_stride", 4, "Decoder output stride (0 = no decoder).", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "skip_logits", False, "Leave the logits layers out (ImageNet weights).", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "allow_missing", False, "Keep initial values of weights not in the file.", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "allow_unused", False, "Ignore checkpoint tensors that match nothing.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "check_crop", 65, "Crop of a sanity forward pass (0 = skip).", flag_values=FLAGS
)


def convert(tf1_checkpoint, output, **model_kwargs):
    """Loads `tf1_checkpoint` into a new model, saves its weights to `output`; returns the report."""
    import numpy as np
    import tensorflow as tf

    from deeplab_ext.checkpoint import load_tf1_checkpoint
    from deeplab_ext.deeplab import DeepLabV3Plus

    load_opts = {k: model_kwargs.pop(k) for k in ("skip_logits", "allow_missing", "allow_unused")}
    check_crop = model_kwargs.pop("check_crop", 0)
    model = DeepLabV3Plus(**model_kwargs)
    model.build()
    report = load_tf1_checkpoint(model, tf1_checkpoint, **load_opts)
    if check_crop:
        logits = model.forward(tf.fill([1, check_crop, check_crop, 3], 127.5))["logits"]
        if not np.isfinite(logits.numpy()).all():
            raise ValueError(f"{tf1_checkpoint}: forward pass gives non-finite logits")
    if not output.endswith(".weights.h5"):
        raise ValueError(f"--output must end in .weights.h5, got {output!r}")
    model.save_weights(output)
    return report


def main(argv=None):
    if not program.parse_flags(FLAGS, argv):
        return None
    if not FLAGS.tf1_checkpoint or not FLAGS.output:
        raise program.UsageError("both --tf1_checkpoint and --output are required")
    report = convert(
        FLAGS.tf1_checkpoint,
        FLAGS.output,
        num_classes=FLAGS.num_classes,
        backbone=FLAGS.backbone,
        output_stride=FLAGS.output_stride,
        atrous_rates=[int(r) for r in FLAGS.atrous_rates],
        decoder_output_stride=FLAGS.decoder_output_stride or None,
        skip_logits=FLAGS.skip_logits,
        allow_missing=FLAGS.allow_missing,
        allow_unused=FLAGS.allow_unused,
        check_crop=FLAGS.check_crop,
    )
    print(f"{FLAGS.tf1_checkpoint} -> {FLAGS.output}: {report.summary()}")
    for name in report.skipped:
        print(f"  skipped {name}")
    for name in report.missing:
        print(f"  missing {name}")


if __name__ == "__main__":
    program.run(main, FLAGS)
