"""Run an exported PseudoSeg SavedModel (wss.export) on image files; write PNG label maps.

Each output is an indexed ('P' mode) PNG: pixel values are class ids and the palette is
the dataset's colour map, so the files are both label maps and viewable pictures.

    python -m wss.predict --export_dir=OUT --input='photos/*.jpg' --output_dir=PRED
"""

import glob
import os

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from wss import program
from wss.errors import InputError
from wss.evaluation import colormap
from wss.serving import load_metadata


def find_inputs(patterns):
    """Sorted files matching the patterns (files or globs); errors name empty patterns."""
    files = []
    for pattern in patterns:
        matched = (
            sorted(glob.glob(pattern))
            if any(c in pattern for c in "*?[")
            else ([pattern] if os.path.isfile(pattern) else [])
        )
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no file.")
        files.extend(matched)
    return files


def load_predictor(export_dir):
    """(encoded-image signature, metadata) of a SavedModel directory."""
    if not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(
            f"{export_dir!r} holds no saved_model.pb. Fix: export one "
            "with python -m wss.export --export_dir=..."
        )
    loaded = tf.saved_model.load(export_dir)
    return loaded.signatures["serving_encoded"], load_metadata(export_dir)


def write_label_png(path, class_map, cmap):
    """Writes an indexed PNG of class ids [H, W] with the palette `cmap`."""
    image = Image.fromarray(np.asarray(class_map, np.uint8), mode="P")
    image.putpalette(colormap.palette_bytes(cmap))
    image.save(path)


def predict_files(export_dir, files, output_dir):
    """Predicts every file and writes OUTPUT_DIR/<name>.png; returns the written paths."""
    predict, metadata = load_predictor(export_dir)
    if metadata.get("class_colors"):  # exports carry their palette
        cmap = colormap.generated_colormap(metadata["num_classes"])
        cmap[: len(metadata["class_colors"])] = metadata["class_colors"]
    else:  # exports written before the palette was kept
        cmap = colormap.colormap_for_dataset(
            metadata.get("dataset") or "demo", metadata.get("num_classes")
        )
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            out = predict(image_bytes=tf.constant(data))
        except tf.errors.InvalidArgumentError as e:
            raise InputError(f"cannot decode {path!r} as an image: {e.message}") from e
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        target = os.path.join(output_dir, name)
        write_label_png(target, out["class_map"].numpy()[0], cmap)
        written.append(target)
    return written


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
    written = predict_files(FLAGS.export_dir, find_inputs(FLAGS.input), FLAGS.output_dir)
    for path in written:
        print(path)
    print(f"Wrote {len(written)} label maps to {FLAGS.output_dir}", flush=True)
    return written


if __name__ == "__main__":
    program.run(main, FLAGS)
