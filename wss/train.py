"""Trains PseudoSeg (or the supervised baseline): `python -m wss.train --gin_file=gin/voc_1_8.gin`.

    python -m wss.train --gin_file=gin/voc_1_8.gin --model_dir=runs/voc_1_8 \
        --dataset_dir=/data/voc_tfrecord [--gin_param="Experiment.num_steps = 100"]

The command line (flags and main) over wss.training: parses the config once, prints what
runs, trains (or resumes a killed run from its latest checkpoint), then evaluates the
final model. With `Experiment.dataset_name = 'demo'` and no --dataset_dir, the built-in
demo dataset is generated into ./demo_data when absent.
"""

import time

from absl import flags

from wss import distribute, files, program
from wss.builders.dataset_dir import resolve_dataset_dir
from wss.experiment import parse_run_config
from wss.training import describe_run, evaluate_final, format_duration, train

FLAGS = program.flag_values()
flags.DEFINE_multi_string(
    "gin_file", [], "gin config files (later ones override).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "gin_param", [], "gin bindings, e.g. 'Experiment.num_steps = 10'.", flag_values=FLAGS
)
flags.DEFINE_string(
    "model_dir", None, "Where checkpoints, summaries and the config go.", flag_values=FLAGS
)
flags.DEFINE_string("dataset_dir", None, "Folder of DeepLab-format TFRecords.", flag_values=FLAGS)
flags.DEFINE_enum(
    "strategy", "default", list(distribute.STRATEGIES), "tf.distribute strategy.", flag_values=FLAGS
)
flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.", flag_values=FLAGS)
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_float16", "mixed_bfloat16"],
    "Compute precision (losses stay float32).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "log_every",
    None,
    "Steps between progress lines (default: TrainLoop.log_every).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "checkpoint_every",
    None,
    "Steps between checkpoints (default: TrainLoop.checkpoint_every).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "images_every", 500, "Steps between image summaries (0 = never).", flag_values=FLAGS
)
flags.DEFINE_integer("max_checkpoints", 5, "Checkpoints kept.", flag_values=FLAGS)
flags.DEFINE_boolean(
    "eval_at_end", True, "Evaluate the final model on Experiment.eval_split.", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "jit_compile",
    None,
    "Compile the training step with XLA (default: TrainLoop.jit_compile).",
    flag_values=FLAGS,
)


def main(argv=None):
    """Trains, then evaluates; returns the final logs (tests call main([...]))."""
    if not program.parse_flags(FLAGS, argv):
        return None
    if not FLAGS.model_dir:
        raise program.UsageError("--model_dir is required")
    config = parse_run_config(FLAGS.gin_file, FLAGS.gin_param)
    exp = config.experiment
    dataset_dir = resolve_dataset_dir(exp.dataset_name, FLAGS.dataset_dir, exp.tfds_data_dir)
    every = FLAGS.checkpoint_every or config.loop.checkpoint_every
    for line in describe_run(exp, config.model, config.method, dataset_dir, FLAGS.model_dir, every):
        print(line, flush=True)
    start = time.time()
    model, logs, dataset_dir, checkpoint = train(
        FLAGS.model_dir,
        dataset_dir,
        FLAGS.strategy,
        FLAGS.tpu,
        FLAGS.precision,
        FLAGS.log_every,
        FLAGS.checkpoint_every,
        FLAGS.images_every,
        FLAGS.max_checkpoints,
        jit_compile=FLAGS.jit_compile,
        config=config,
    )
    print(f"training took {format_duration(time.time() - start)}")
    if FLAGS.eval_at_end and checkpoint:
        result = evaluate_final(model, checkpoint, FLAGS.model_dir, dataset_dir, exp=exp)
        print(
            f"final mIoU on {exp.eval_split}: {100 * result['miou']:.2f}%  "
            f"(details: {result['json_path']})"
        )
    out = files.absolute(FLAGS.model_dir)
    print(
        f"outputs: checkpoints, operative_config.gin and eval JSON in {out}; "
        f"TensorBoard: tensorboard --logdir {out}"
    )
    return logs


if __name__ == "__main__":
    program.run(main, FLAGS)
