"""Pretrains the demo's backbone on image-level labels (see wss.pretraining).

python -m wss.pretrain --gin_file=gin/demo.gin --output=demo_data/backbone/model.ckpt
"""

from absl import flags

from wss import program
from wss.builders import demo
from wss.experiment import parse_run_config
from wss.pretraining import build_classifier, pretrain, pretrain_arrays, save_backbone

FLAGS = program.flag_values()
flags.DEFINE_string("output", None, "Checkpoint prefix to write.", flag_values=FLAGS)
flags.DEFINE_multi_string("gin_file", ["gin/demo.gin"], "Config of the model.", flag_values=FLAGS)
flags.DEFINE_multi_string(
    "gin_param", [], "Extra gin bindings (e.g. PretrainConfig.steps=3000).", flag_values=FLAGS
)


def main(argv=None):
    """Command line entry: pretrains and writes --output; returns the result dict."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    if not fv.output:
        raise program.UsageError(
            "--output is required: the checkpoint prefix to write, e.g. "
            "demo_data/backbone/model.ckpt"
        )
    run_config = parse_run_config(fv.gin_file, fv.gin_param)
    config = run_config.pretrain
    images, targets = pretrain_arrays(config)
    model = build_classifier(demo.NUM_CLASSES, run_config.model)
    result = pretrain(model, images, targets, config)
    print(f"wrote {save_backbone(model, fv.output)}")
    return result


if __name__ == "__main__":
    program.run(main, FLAGS)
