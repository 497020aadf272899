"""Side-by-side comparison of the method's variants (Table 5/6 rows) over several seeds.

    python -m wss.compare [--output_dir=runs/compare] [--seeds=0,1,2] [--num_steps=N] \
        [--rows=supervised,self_training,semi,weakly,decoder,sgc] \
        [--gin_param="ModelSettings.aspp_depth = 32"]

Each (row, seed) run reads the experiment gin file(s) (default gin/demo.gin), then the
extra --gin_param bindings, then the row's method bindings, `Experiment.seed = seed` and
the --num_steps override, so every row shares the labeled split, budget and seed and
differs only in the method. It trains into OUTPUT_DIR/<row>/seed<k>, evaluates the final
checkpoint on Experiment.eval_split and, for the 'semi' (fusion) row, measures the ECE of
every pseudo-label source there. A run whose eval JSON already exists is reused, so an
interrupted comparison resumes with the same command.

The 'self_training' row (Table 6) is three stages with the same seed and budget: the
'supervised' run of that seed is the teacher (trained first if that row is not asked
for), it labels the extra split without the labeled ids (arg-max where the teacher's max
probability is > 0.5, 255 elsewhere) into OUTPUT_DIR/self_training/seed<k>/pseudo, and a
supervised student trains from the same initialisation on the union of the labeled split
and those records.

Outputs in OUTPUT_DIR: compare.json (every number), compare.md (the mIoU table with the
paper's VOC 1/8 numbers for reference, and the ECE table) and compare.png (mean mIoU per
row with std error bars). The work lives in wss.comparison.runner.
"""

from absl import flags

from wss import program
from wss.comparison import runner
from wss.comparison.rows import ROWS, CompareError

FLAGS = program.flag_values()
flags.DEFINE_string(
    "output_dir", "runs/compare", "Where the runs and compare.* go.", flag_values=FLAGS
)
flags.DEFINE_list(
    "seeds", ["0", "1", "2"], "Seeds (Experiment.seed), comma-separated.", flag_values=FLAGS
)
flags.DEFINE_list(
    "rows", list(ROWS), f"Rows to compare, from {', '.join(ROWS)}.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_steps",
    None,
    "Training steps of every run (default: the gin file's Experiment.num_steps).",
    flag_values=FLAGS,
)
flags.DEFINE_multi_string(
    "gin_file", [runner.DEFAULT_GIN], "Experiment gin file(s).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "gin_param",
    [],
    "Extra gin bindings for every run (not MethodOptions.mode/source or Experiment.seed).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "dataset_dir",
    None,
    "TFRecord folder (demo: ./demo_data, generated when absent).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "ece_batches", None, "Batches of the eval split for the ECE (default: all).", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the summary dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as e:
        raise CompareError(f"--seeds must be integers, got {FLAGS.seeds}") from e
    if FLAGS.num_steps is not None and FLAGS.num_steps <= 0:
        raise CompareError(f"--num_steps must be positive, got {FLAGS.num_steps}")
    return runner.run_comparison(
        FLAGS.output_dir,
        seeds,
        FLAGS.rows,
        FLAGS.num_steps,
        FLAGS.gin_file,
        FLAGS.gin_param,
        FLAGS.dataset_dir,
        FLAGS.ece_batches,
        log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    program.run(main, FLAGS)
