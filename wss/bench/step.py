"""Measures the model's forward pass and training step on synthetic data.

    python -m wss.bench.step [--gin_file=gin/voc_1_16.gin] [--gin_param=...] --crop=513 \
        --labeled_batch=1 --extra_batch=1 --steps=5 --mode=supervised|semi|weakly \
        [--what=forward|train_step] [--json=PATH]

On GPUs (every visible one, the paper's per-GPU batch; one command, all four settings):

    python -m wss.bench.step --gin_file=gin/voc_1_8.gin --strategy=mirrored --crop=513 \
        --labeled_batch=4 --extra_batch=4 --mode=semi --sweep --nosplit --json=gpu_step.json

The model is the one the gin config builds (default: gin/base.gin, whose dataset is
pascal_voc_seg with 21 classes; the full Xception-65 unless gin params shrink it). Batches
are random but have the real pipelines' keys, dtypes and shapes. Every timed computation
is a tf.function, as in training; warm-up calls (tracing included) are not timed.
Reported: median / min / max seconds per call, images per second, peak memory
(`peak_memory_bytes`: the accelerator allocator's peak, summed over the GPUs, reset before
each setting; without GPUs the process's peak RSS, a high-water mark over the whole
process) and, for train_step on one device, the time split of the step: each of the
model's own passes (labeled_pass, pseudo_labels with its Grad-CAM/SGC pieces, strong_pass,
the optimizer) runs as its own tf.function on the same model and inputs, differentiated
where the step differentiates it, and its median is given as a share of the full step's
median (wss.benchmarking.step_parts).

The full train step is timed through wss.distribute.make_train_function, the function
training runs: under `--strategy=mirrored` every replica (GPU) gets `--labeled_batch` +
`--extra_batch` images, so the global batch and images_per_s grow with the GPUs.
`--sweep` times float32 and mixed_float16, each with XLA off and on, in one process and
writes them all under "runs". The work lives in wss.benchmarking.step_timing.
"""

import functools
import json
import sys

import tensorflow as tf
from absl import flags

from wss import program
from wss.benchmarking import step_timing, timing
from wss.method.options import MODES

FLAGS = program.flag_values()
flags.DEFINE_multi_string("gin_file", [], "Gin files (default: gin/base.gin).", flag_values=FLAGS)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.", flag_values=FLAGS)
flags.DEFINE_integer("crop", None, "Crop size (default: Experiment.crop_size).", flag_values=FLAGS)
flags.DEFINE_integer(
    "labeled_batch", 1, "Labeled images per step (forward: batch).", flag_values=FLAGS
)
flags.DEFINE_integer("extra_batch", 1, "Extra (weak + strong) images per step.", flag_values=FLAGS)
flags.DEFINE_integer("steps", 5, "Timed calls.", flag_values=FLAGS)
flags.DEFINE_integer("warmup", 1, "Untimed calls first (the first one traces).", flag_values=FLAGS)
flags.DEFINE_integer(
    "split_steps", None, "Timed calls per split part (default: --steps).", flag_values=FLAGS
)
flags.DEFINE_enum("mode", None, list(MODES), "Overrides MethodOptions.mode.", flag_values=FLAGS)
flags.DEFINE_enum(
    "what",
    "train_step",
    ["train_step", "forward"],
    "The full training step, or the bare model's inference pass.",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "split", True, "Time the parts of the step (train_step only).", flag_values=FLAGS
)
flags.DEFINE_boolean(
    "jit_compile", False, "Compile every timed function with XLA.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras dtype policy (changes numerics: opt-in, measured apart).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "Seed of the weights and the synthetic data.", flag_values=FLAGS)
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored"],
    "default: one device; mirrored: every visible GPU (per-replica batches).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "sweep",
    False,
    "Time float32 and mixed_float16, each with XLA off and on (train_step).",
    flag_values=FLAGS,
)
flags.DEFINE_string("json", None, "Write all numbers to this JSON file.", flag_values=FLAGS)


def main(argv=None):
    """Command line entry; returns the result dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    print_fn = functools.partial(print, flush=True)
    print_fn(timing.device_info(fv.strategy)["device_note"])
    kwargs = dict(
        gin_files=fv.gin_file,
        gin_params=fv.gin_param,
        crop=fv.crop,
        labeled_batch=fv.labeled_batch,
        extra_batch=fv.extra_batch,
        steps=fv.steps,
        warmup=fv.warmup,
        split_steps=fv.split_steps,
        mode=fv.mode,
        what=fv.what,
        split=fv.split,
        seed=fv.seed,
        strategy_name=fv.strategy,
    )
    if fv.sweep:
        if fv.what != "train_step":
            raise program.UsageError("--sweep times the train step (--what=train_step)")
        result = step_timing.sweep(print_fn=print_fn, **kwargs)
    else:
        result = step_timing.run(
            jit_compile=fv.jit_compile, precision=fv.precision, print_fn=print_fn, **kwargs
        )
    if fv.json:
        with tf.io.gfile.GFile(fv.json, "w") as f:
            json.dump(result, f, indent=2)
    bad = step_timing.non_finite_keys(result)
    if bad:
        print(f"warning: non-finite numbers: {bad}", file=sys.stderr)
    return result


if __name__ == "__main__":
    program.run(main, FLAGS)
