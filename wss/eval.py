"""Evaluates a trained PseudoSeg model: mIoU table, JSON and TensorBoard summaries.

    python -m wss.eval --gin_file=gin/x.gin --model_dir=DIR --dataset_dir=DATA \
        [--checkpoint=DIR/ckpt-N] [--split=val] [--continuous]

The evaluation itself lives in wss.evaluation.evaluator.
"""

import os

import tensorflow as tf
from absl import flags

from wss import program, restore
from wss.data import pipeline
from wss.evaluation import evaluator

FLAGS = program.flag_values()
program.define_model_flags(FLAGS)
program.define_data_flags(FLAGS)
flags.DEFINE_multi_float(
    "scales", [1.0], "Eval scales (multi-scale: e.g. 0.75 1 1.25).", flag_values=FLAGS
)
flags.DEFINE_bool("flip", False, "Also evaluate left-right flipped images.", flag_values=FLAGS)
flags.DEFINE_bool(
    "continuous",
    False,
    "Wait for new checkpoints in --model_dir and evaluate each once.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "eval_interval_secs",
    60,
    "Minimum seconds between checkpoint polls (--continuous).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "eval_timeout_secs",
    None,
    "With --continuous: stop after this many "
    "seconds without a new checkpoint (default: wait forever, or until "
    "the checkpoint of Experiment.num_steps).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "progress_every", 20, "Progress line every N batches (0: off).", flag_values=FLAGS
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where eval_<split>_<step>.json and the TensorBoard 'eval' folder go (default: --model_dir).",
    flag_values=FLAGS,
)


def main(argv=None):
    """CLI entry point; returns the list of results (one per evaluated checkpoint)."""
    if not program.parse_flags(FLAGS, argv):
        return []
    fv = FLAGS
    setup = restore.setup_tool(**program.model_flag_values(fv), **program.data_flag_values(fv))
    model, model_dir, desc = setup.model, setup.model_dir, setup.descriptor
    name, dataset_dir, split, crop = (
        setup.dataset_name,
        setup.dataset_dir,
        setup.split,
        setup.crop,
    )
    output_dir = fv.output_dir or model_dir
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))

    def dataset_fn():
        return pipeline.eval_dataset(
            dataset_dir, fv.batch_size, split=split, dataset_name=name, eval_crop_size=crop
        )

    kwargs = dict(
        model=model,
        dataset_fn=dataset_fn,
        desc=desc,
        split=split,
        output_dir=output_dir,
        scales=fv.scales,
        flip=fv.flip,
        progress_every=fv.progress_every,
        writer=writer,
    )

    def evaluate(ckpt):
        ckpt = restore.restore_model(model, ckpt)
        return evaluator.evaluate_checkpoint(
            ckpt=ckpt, step=restore.checkpoint_step(ckpt), **kwargs
        )

    if not fv.continuous:
        return [evaluate(fv.checkpoint or model_dir)]
    results = []
    last_step = setup.config.experiment.num_steps
    print(f"Waiting for checkpoints in {model_dir} ...", flush=True)
    for ckpt in tf.train.checkpoints_iterator(
        model_dir, fv.eval_interval_secs, timeout=fv.eval_timeout_secs
    ):
        results.append(evaluate(ckpt))
        if results[-1]["step"] >= last_step:
            print(f"Reached the last training step ({last_step}); stopping.", flush=True)
            break
    return results


if __name__ == "__main__":
    program.run(main, FLAGS)
