"""A trained PseudoSeg model as a SavedModel for inference, and the export's metadata.

Signatures (outputs: 'class_map' int32 [B, H, W], 'probabilities' float32 [B, H, W, C],
'logits' float32 [B, H, W, C], all at the input size):
  serving_default  images uint8 [B, H, W, 3]
  serving_float    images float32 [B, H, W, 3] in [0, 255]
  serving_encoded  image_bytes string scalar (JPEG/PNG/...) -> batch of one
Images are padded bottom/right with 127.5 to the eval crop (or kept if larger), run and
cropped back, exactly as wss.eval does, so predictions equal evaluation predictions.
The command lines: wss.export writes one, wss.predict runs one.
"""

import json
import os

import numpy as np
import tensorflow as tf

from wss.evaluation import evaluator

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
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=1)
    return export_dir


def load_metadata(export_dir):
    """The export's metadata dict ({} if the file is missing)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
