"""Command line: readable PNGs of a run (image, ground truth, prediction with a legend) for
the first N images of a split and, for a PseudoSeg run, the method's panels for N images
of the extra set.

    python -m wss.vis --model_dir=DIR [--dataset_dir=DATA] [--num_images=8]
        [--method_panels --num_extra_images=4] [--output_dir=VIS]

The drawing lives in wss.evaluation.pictures.
"""

import os

from absl import flags

from wss import errors, program, restore
from wss.evaluation import colormap, pictures

FLAGS = program.flag_values()
program.define_model_flags(FLAGS)
program.define_data_flags(FLAGS)
flags.DEFINE_integer("num_images", 8, "How many images of --split to draw.", flag_values=FLAGS)
flags.DEFINE_string(
    "output_dir", None, "Where the PNGs go (default: MODEL_DIR/vis).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "method_panels",
    False,
    "Also draw the method's panels (weak view, CAM, SGC, pseudo label, strong view, strong "
    "prediction) for images of the extra set (a PseudoSeg run only).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "num_extra_images", 4, "How many extra-set images get method panels.", flag_values=FLAGS
)
flags.DEFINE_string(
    "extra_split", None, "Extra set to draw (default: Experiment.extra_split).", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the written paths."""
    from wss.data import pipeline

    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    setup = restore.setup_tool(**program.model_flag_values(fv), **program.data_flag_values(fv))
    model, desc, name = setup.model, setup.descriptor, setup.dataset_name
    if fv.method_panels and model.options.mode == "supervised":
        raise errors.UsageError(
            f"--method_panels needs a PseudoSeg run (MethodOptions.mode 'semi' or 'weakly'); "
            f"the run in {setup.model_dir} is supervised, so it has no pseudo labels to draw"
        )
    restore.restore_model(model, fv.checkpoint or setup.model_dir)
    output_dir = fv.output_dir or os.path.join(setup.model_dir, "vis")
    cmap = colormap.colormap_for_dataset(name, desc.num_classes)
    dataset = pipeline.eval_dataset(
        setup.dataset_dir,
        fv.batch_size,
        split=setup.split,
        dataset_name=name,
        eval_crop_size=setup.crop,
    )
    written = pictures.visualize(model, dataset, output_dir, fv.num_images, cmap, desc.class_names)
    if fv.method_panels:
        config = setup.config
        stream = pipeline.TrainingStream(
            setup.dataset_dir,
            fv.extra_split or config.experiment.extra_split,
            # The dataset's own training crop, as the panels have always been drawn.
            desc.train_crop_size,
            dataset_name=name,
            augment_config=config.augment,
            shuffle_buffer=0,
            repeat=False,
            drop_remainder=False,
            seed=0,
        )
        extra = pipeline.extra_dataset(stream, fv.batch_size, strong_config=config.strong)
        written += pictures.visualize_method(
            model, extra, output_dir, fv.num_extra_images, cmap, desc.class_names
        )
    print(f"Wrote {len(written)} images to {output_dir}", flush=True)
    return written


if __name__ == "__main__":
    program.run(main, FLAGS)
