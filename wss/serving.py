"""A trained PseudoSeg model as a SavedModel for inference, and the export's metadata.

Signatures (outputs: 'class_map' int32 [B, H, W], 'probabilities' float32 [B, H, W, C],
'logits' float32 [B, H, W, C], all at the input size):
  serving_default  images uint8 [B, H, W, 3]
  serving_float    images float32 [B, H, W, 3] in [0, 255]
  serving_encoded  image_bytes string scalar (JPEG/PNG/...) -> batch of one
Images are padded bottom/right with 127.5 to the eval crop (or kept if larger), run and
cropped back, exactly as wss.eval does, so predictions equal evaluation predictions.
The command lines: wss.export writes one (export), wss.predict runs one on image files
(find_inputs, predict_files): each output is an indexed ('P' mode) PNG whose pixel values
are class ids and whose palette is the dataset's colour map.
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from wss import files
from wss.data import image_io
from wss.errors import InputError
from wss.evaluation import colormap, evaluator

PAD_VALUE = 127.5
METADATA_FILE = "pseudoseg_export.json"


def pad_to_crop(images, crop_size):
    """Pads float images bottom/right with 127.5 to at least crop_size x crop_size."""
    shape = tf.shape(images)
    pad_h = tf.maximum(crop_size - shape[1], 0)
    pad_w = tf.maximum(crop_size - shape[2], 0)
    return tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=PAD_VALUE)


class InferenceModule(tf.Module):
    """tf.Module wrapping a PseudoSeg/DeepLab model with eval-identical preprocessing."""

    def __init__(self, model, crop_size, scales=(1.0,), flip=False):
        super().__init__(name="pseudoseg_inference")
        self.model = model
        # Every weight explicitly: Keras 3 layers kept in Python lists are not followed
        # by TF's object graph, and SavedModel saves only tracked variables.
        self.model_weights = {name: v.value for name, v in model.tf1_variable_map().items()}
        self.crop_size = int(crop_size)
        self._logits_fn = evaluator.make_logits_fn(model, scales, flip)

    def _predict(self, images):
        images = tf.cast(images, tf.float32)
        size = tf.shape(images)[1:3]
        logits = self._logits_fn(pad_to_crop(images, self.crop_size))
        logits = tf.cast(logits[:, : size[0], : size[1], :], tf.float32)
        return {
            "class_map": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "logits": logits,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_uint8(self, images):
        """Predictions for uint8 images [B, H, W, 3]."""
        return self._predict(images)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve_float(self, images):
        """Predictions for float images [B, H, W, 3] in [0, 255]."""
        return self._predict(images)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    def serve_encoded(self, image_bytes):
        """Predictions for one encoded image (JPEG, PNG, BMP, GIF first frame)."""
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return self._predict(image[tf.newaxis])


def export_model(
    model,
    export_dir,
    crop_size,
    class_names=(),
    dataset_name=None,
    checkpoint=None,
    scales=(1.0,),
    flip=False,
    class_colors=None,
):
    """Writes the SavedModel (and METADATA_FILE with classes, their colours and the crop,
    so that the export is usable without the dataset) to export_dir."""
    module = InferenceModule(model, crop_size, scales, flip)
    signatures = {
        "serving_default": module.serve_uint8,
        "serving_float": module.serve_float,
        "serving_encoded": module.serve_encoded,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    metadata = {
        "dataset": dataset_name,
        "num_classes": int(model.num_classes),
        "class_names": list(class_names),
        "crop_size": int(crop_size),
        "checkpoint": checkpoint,
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        "signatures": sorted(signatures),
        "class_colors": (
            None if class_colors is None else np.asarray(class_colors)[: model.num_classes].tolist()
        ),
    }
    files.write_json(os.path.join(export_dir, METADATA_FILE), metadata, indent=1)
    return export_dir


def load_metadata(export_dir):
    """The export's metadata dict ({} if the file is missing)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not files.exists(path):
        return {}
    return files.read_json(path)


def find_inputs(patterns):
    """Sorted files matching the patterns (files or globs, any tf.io.gfile path); errors
    name a pattern that matches nothing."""
    found = []
    for pattern in patterns:
        matched = (
            files.glob(pattern)
            if any(c in pattern for c in "*?[")
            else ([pattern] if files.isfile(pattern) else [])
        )
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no file.")
        found.extend(matched)
    return found


def load_predictor(export_dir):
    """(encoded-image signature, metadata) of a SavedModel directory."""
    if not files.exists(os.path.join(export_dir, "saved_model.pb")):
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
    image_io.save_png(image, path)


def export_colormap(metadata):
    """The colour map of an export: its own palette, else the dataset's (exports written
    before the palette was kept)."""
    if metadata.get("class_colors"):
        cmap = colormap.generated_colormap(metadata["num_classes"])
        cmap[: len(metadata["class_colors"])] = metadata["class_colors"]
        return cmap
    return colormap.colormap_for_dataset(
        metadata.get("dataset") or "demo", metadata.get("num_classes")
    )


def predict_files(export_dir, paths, output_dir):
    """Predicts every image file and writes OUTPUT_DIR/<name>.png; returns the written
    paths."""
    predict, metadata = load_predictor(export_dir)
    cmap = export_colormap(metadata)
    files.makedirs(output_dir)
    written = []
    for path in paths:
        data = files.read_bytes(path)
        try:
            out = predict(image_bytes=tf.constant(data))
        except tf.errors.InvalidArgumentError as e:
            raise InputError(f"cannot decode {path!r} as an image: {e.message}") from e
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        target = os.path.join(output_dir, name)
        write_label_png(target, out["class_map"].numpy()[0], cmap)
        written.append(target)
    return written
