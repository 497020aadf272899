"""Run an exported PseudoSeg SavedModel (wss.export) on image files; write PNG label maps.

Each output is an indexed ('P' mode) PNG: pixel values are class ids and the palette is
the dataset's colour map, so the files are both label maps and viewable pictures. Every
path may be a tf.io.gfile URL (gs://..., file://...); --input takes files or globs.

    python -m wss.predict --export_dir=OUT --input='photos/*.jpg' --output_dir=PRED
"""

from absl import flags

from wss import program, serving

FLAGS = program.flag_values()
flags.DEFINE_string("export_dir", None, "SavedModel directory from wss.export.", flag_values=FLAGS)
flags.DEFINE_multi_string("input", [], "Image files or glob patterns.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where the PNG label maps go.", flag_values=FLAGS)


def main(argv=None):
    """CLI entry point; returns the written paths."""
    if not program.parse_flags(FLAGS, argv):
        return []
    if not FLAGS.export_dir or not FLAGS.input or not FLAGS.output_dir:
        raise program.UsageError("pass --export_dir, --input (one or more) and --output_dir.")
    inputs = serving.find_inputs(FLAGS.input)
    written = serving.predict_files(FLAGS.export_dir, inputs, FLAGS.output_dir)
    for path in written:
        print(path)
    print(f"Wrote {len(written)} label maps to {FLAGS.output_dir}", flush=True)
    return written


if __name__ == "__main__":
    program.run(main, FLAGS)
