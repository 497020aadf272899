"""Command line: ECE of a trained model's predictions and of each pseudo-label source.

    python -m wss.calibration --gin_file=x.gin --model_dir=DIR --dataset_dir=DATA

Writes calibration_<split>_<step>.json and the reliability diagrams (.png) to
--output_dir (default --model_dir) and prints a table. The work lives in wss.evaluation.reliability.
"""

import os

import tensorflow as tf
from absl import flags

from wss import program, restore
from wss.evaluation import reliability

FLAGS = program.flag_values()
program.define_model_flags(FLAGS)
program.define_data_flags(FLAGS)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where calibration_<split>_<step>.json/.png go (default: --model_dir).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_batches", None, "Stop after N batches (default: whole split).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "decoder_bn_training",
    True,
    "Decoder logits of the pseudo labels from a training-mode batch-norm pass, as in training.",
    flag_values=FLAGS,
)


def main(argv=None):
    """CLI entry point; returns (results, json path, png path)."""
    from wss.data import pipeline

    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    setup = restore.setup_tool(**program.model_flag_values(fv), **program.data_flag_values(fv))
    model, split = setup.model, setup.split
    ckpt = restore.restore_model(model, fv.checkpoint or setup.model_dir)
    step = restore.checkpoint_step(ckpt)
    dataset = pipeline.eval_dataset(
        setup.dataset_dir,
        fv.batch_size,
        split=split,
        dataset_name=setup.dataset_name,
        eval_crop_size=setup.crop,
    )
    print(f"Calibration of {ckpt} (step {step}) on {setup.dataset_name}/{split} ...", flush=True)
    results = reliability.calibrate(
        model,
        dataset,
        setup.descriptor.num_classes,
        max_batches=fv.max_batches,
        decoder_bn_training=fv.decoder_bn_training,
        progress_every=20,
        log=lambda s: print(s, flush=True),
    )
    print(reliability.format_table(results), flush=True)
    out_dir = fv.output_dir or setup.model_dir
    tf.io.gfile.makedirs(out_dir)
    stem = os.path.join(out_dir, f"calibration_{split}_{step}")
    reliability.save_results_json(
        results,
        stem + ".json",
        checkpoint=ckpt,
        step=step,
        split=split,
        temperature=model.options.temperature,
        gamma=model.options.gamma,
    )
    reliability.save_reliability_png(results, stem + ".png")
    print(f"Wrote {stem}.json and {stem}.png", flush=True)
    return results, stem + ".json", stem + ".png"


if __name__ == "__main__":
    program.run(main, FLAGS)
