"""Exports a trained PseudoSeg model as a SavedModel (see wss.serving for its signatures).

python -m wss.export --gin_file=x.gin --model_dir=DIR --export_dir=OUT
"""

from absl import flags

from wss import program, restore
from wss.data import descriptors
from wss.evaluation import colormap
from wss.model import build_model
from wss.serving import export_model

FLAGS = program.flag_values()
program.define_model_flags(FLAGS)
flags.DEFINE_string("export_dir", None, "Output directory of the SavedModel.", flag_values=FLAGS)
flags.DEFINE_string(
    "dataset_name", None, "Dataset (default: Experiment.dataset_name).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "eval_crop_size",
    None,
    "Pad size (default: the experiment's or the dataset's eval crop).",
    flag_values=FLAGS,
)
flags.DEFINE_multi_float(
    "scales", [1.0], "Test-time scales baked into the export.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "flip", False, "Bake left-right flip averaging into the export.", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the export directory."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    if not fv.export_dir:
        raise restore.RestoreError("pass --export_dir (where the SavedModel goes).")
    model_dir, config = restore.parse_run(**program.model_flag_values(fv))
    exp = config.experiment
    dataset = fv.dataset_name or exp.dataset_name
    desc = descriptors.get_descriptor(dataset)
    crop = restore.eval_crop(exp, fv.dataset_name, fv.eval_crop_size)
    model = build_model(desc.num_classes, config.model, config.method)
    ckpt = restore.restore_model(model, fv.checkpoint or model_dir)
    export_model(
        model,
        fv.export_dir,
        crop,
        desc.class_names,
        desc.name,
        ckpt,
        fv.scales,
        fv.flip,
        class_colors=colormap.colormap_for_dataset(dataset, desc.num_classes),
    )
    print(f"Exported {ckpt} ({desc.name}, crop {crop}) to {fv.export_dir}", flush=True)
    return fv.export_dir


if __name__ == "__main__":
    program.run(main, FLAGS)
