"""Converts an official DeepLab TF1 checkpoint into Keras weights for our model.

    python -m deeplab_ext.convert_checkpoint --tf1_checkpoint=xception_65/model.ckpt \
        --output=xception_65_imagenet.weights.h5 --skip_logits

Builds the model the flags describe, loads the checkpoint through the strict loader,
optionally runs one forward pass as a sanity check, saves `.weights.h5`, and prints how
many tensors were loaded, skipped, missing and unused. Bad input (a missing flag, an
unreadable or mismatching checkpoint, an unknown backbone) prints one line `error: ...` and
exits with code 2; --traceback shows the full trace instead. The prologue is this module's
own, since deeplab_ext does not import wss.
"""

import os
import sys

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads

from deeplab_ext.errors import DeepLabError

USAGE_EXIT_CODE = 2
HELP_FLAGS = ("-h", "--help", "-?", "--helpfull", "--helpshort")
# Errors that name the user's input: the library's own and those of a bad path.
_USER_ERRORS = (DeepLabError, FileNotFoundError, NotADirectoryError, IsADirectoryError)

FLAGS = flags.FlagValues()
flags.DEFINE_bool("traceback", False, "On an error, show the full Python trace.", flag_values=FLAGS)
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

    if not output.endswith(".weights.h5"):
        raise DeepLabError(f"--output must end in .weights.h5, got {output!r}")
    load_opts = {k: model_kwargs.pop(k) for k in ("skip_logits", "allow_missing", "allow_unused")}
    check_crop = model_kwargs.pop("check_crop", 0)
    model = DeepLabV3Plus(**model_kwargs)
    model.build()
    report = load_tf1_checkpoint(model, tf1_checkpoint, **load_opts)
    if check_crop:
        logits = model.forward(tf.fill([1, check_crop, check_crop, 3], 127.5))["logits"]
        if not np.isfinite(logits.numpy()).all():
            raise DeepLabError(f"{tf1_checkpoint}: forward pass gives non-finite logits")
    model.save_weights(output)
    return report


def parse_flags(argv):
    """Parses argv into FLAGS; prints the help and returns False for -h/--help."""
    if any(a in HELP_FLAGS for a in argv[1:]):
        print(__doc__.strip() + "\n\n" + FLAGS.get_help())
        return False
    FLAGS.unparse_flags()
    FLAGS(argv)
    return True


def main(argv=None):
    """Converts the checkpoint the flags name (tests call main([...]))."""
    if not parse_flags(list(sys.argv if argv is None else argv)):
        return None
    if not FLAGS.tf1_checkpoint or not FLAGS.output:
        raise DeepLabError("both --tf1_checkpoint and --output are required")
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
    return report


def run():
    """main() with bad input reported as one line `error: ...` and exit code 2."""
    try:
        main()
    except flags.Error as e:
        fail(f"{e} (see --help)")
    except Exception as e:
        if FLAGS.is_parsed() and FLAGS.traceback or not _is_user_error(e):
            raise
        fail(str(e))


def _is_user_error(exc):
    tf = sys.modules.get("tensorflow")  # not imported for a flag error
    return isinstance(exc, _USER_ERRORS) or (
        tf is not None and isinstance(exc, tf.errors.NotFoundError)
    )


def fail(message):
    """Prints `error: <message>` on one line and exits with code 2."""
    sys.stdout.flush()
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_CODE)


if __name__ == "__main__":
    run()
