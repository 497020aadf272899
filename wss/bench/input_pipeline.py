"""Measures input-pipeline throughput: labeled and weak+strong (extra) streams.

  python -m wss.bench.input_pipeline [--dataset_dir=... --dataset=demo --split=train
      --crop=513 --batch_size=8 --steps=20]

Without --dataset_dir the demo dataset is built in a temporary folder. The streams are
wss.data.pipeline's, timed by wss.benchmarking.timing.images_per_second.
"""

import os
import tempfile

import tensorflow as tf
from absl import flags

from wss import program
from wss.benchmarking import timing
from wss.builders import demo
from wss.data import pipeline

FLAGS = program.flag_values()
flags.DEFINE_string(
    "dataset_dir", None, "TFRecord folder (default: demo data in a temp dir).", flag_values=FLAGS
)
flags.DEFINE_string("dataset", "demo", "Registered dataset name.", flag_values=FLAGS)
flags.DEFINE_string("split", "train", "Split to read.", flag_values=FLAGS)
flags.DEFINE_integer("crop", 513, "Training crop size.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 8, "Batch size.", flag_values=FLAGS)
flags.DEFINE_integer("steps", 20, "Timed batches (after 3 warm-up batches).", flag_values=FLAGS)
flags.DEFINE_integer(
    "num_parallel_calls", -1, "Parallel map calls (-1 = AUTOTUNE).", flag_values=FLAGS
)


def main(argv=None):
    """Command line entry: prints the labeled and the extra stream's images/s."""
    if not program.parse_flags(FLAGS, argv):
        return None
    tmp = None
    data_dir = FLAGS.dataset_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        data_dir = os.path.join(tmp.name, "demo")
        demo.ensure_demo_dataset(data_dir)
    calls = tf.data.AUTOTUNE if FLAGS.num_parallel_calls < 0 else FLAGS.num_parallel_calls
    stream = pipeline.TrainingStream(
        data_dir,
        FLAGS.split,
        FLAGS.crop,
        dataset_name=FLAGS.dataset,
        num_parallel_calls=calls,
        shuffle_buffer=100,
    )
    label = f"AUTOTUNE (cores={os.cpu_count()})" if calls == tf.data.AUTOTUNE else calls
    print(
        f"data: {data_dir} split={FLAGS.split} crop={FLAGS.crop} "
        f"batch={FLAGS.batch_size} parallel calls={label}"
    )
    labeled = pipeline.labeled_dataset(stream, FLAGS.batch_size)
    print(
        f"labeled: {timing.images_per_second(labeled, FLAGS.batch_size, FLAGS.steps):.1f} images/s"
    )
    extra = pipeline.extra_dataset(stream, FLAGS.batch_size)
    print(
        f"extra (weak+strong): "
        f"{timing.images_per_second(extra, FLAGS.batch_size, FLAGS.steps):.1f} images/s"
    )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    program.run(main, FLAGS)
