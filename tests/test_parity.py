"""Parity with the official TF1 graph: every key of every reference file in the parity dir.

For each `*.npz` in $PSEUDOSEG_PARITY_DIR (default tests/reference/parity, shipped; a `step/`
subfolder is left to the step test), the checkpoint is rebuilt by tests/parity_checkpoint.py, loaded
strictly into our PseudoSeg model, and every output key is recomputed with the same
methods the train step uses and compared: max |ours - ref| <= tol/<key> * max |ref|.
A key this test does not know fails the test, so new reference outputs cannot slip by.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.checkpoint import load_tf1_checkpoint
from tests.conftest import REFERENCE_DIR
from wss.model import PseudoSegModel

# $PSEUDOSEG_PARITY_DIR replaces the shipped references; its `step/` folder holds training-step
# references, which tests/test_step_parity.py reads.
PARITY_DIR = os.environ.get("PSEUDOSEG_PARITY_DIR", str(REFERENCE_DIR / "parity"))
INPUT_KEYS = {
    "image",
    "valid",
    "image_labels",
    "crop",
    "checkpoint_seed",
    "model_variant",
    "output_stride",
    "atrous_rates",
}
FILES = sorted(
    f
    for f in glob.glob(os.path.join(PARITY_DIR, "**", "*.npz"), recursive=True)
    if "step" not in os.path.relpath(f, PARITY_DIR).split(os.sep)[:-1]
)
# Worst relative error per key, printed at the end with `pytest -s` (README figures).
WORST = {}


def with_background(cam):
    """Prepends the background channel 1 - max_c CAM_c (the release's `cam` output)."""
    return tf.concat([1.0 - tf.reduce_max(cam, axis=3, keepdims=True), cam], axis=3)


def test_parity_directory_has_reference_files():
    assert FILES, f"no *.npz parity references in {PARITY_DIR} (set PSEUDOSEG_PARITY_DIR)"


def ours_for(ref, prefix):
    """Every output key of a reference file, computed by our model and method."""
    variant = str(ref["model_variant"])
    model = PseudoSegModel(
        deeplab_config=dict(
            num_classes=21,
            backbone=variant,
            output_stride=int(ref["output_stride"]),
            atrous_rates=tuple(int(r) for r in ref["atrous_rates"]),
            decoder_output_stride=4,
        )
    )
    model.build()

    def load():
        report = load_tf1_checkpoint(model, prefix)  # strict: nothing unused, nothing missing
        assert not report.missing and not report.unused

    image = tf.constant(ref["image"])
    valid = tf.constant(ref["valid"])
    labels = tf.constant(ref["image_labels"])
    dl = model.deeplab
    out = {}

    # Inference-mode outputs first: training-mode batch norm updates moving statistics.
    load()
    inf = dl.forward(image, training=False)
    size = dl.decoder_size(inf["end_points"])
    out["semantic_logits"] = inf["logits"]
    out["cls_logits"] = inf["cls_logits"]
    for name, tensor in inf["end_points"].items():
        out[f"endpoint/{name}"] = tensor
    out["endpoint/decoder_low_level"] = inf["end_points"][dl.low_level_end_point]
    sgc_inf_bn = model.cam_and_sgc(inf["end_points"], valid, size, labels, sgc_bn_training=False)
    out["sgc_logits_inference_bn"] = sgc_inf_bn["sgc_logits"]
    gt = model.cam_and_sgc(inf["end_points"], valid, size, labels, sgc_bn_training=True)
    out["cam"] = with_background(gt["cam"])
    out["sgc_logits"] = gt["sgc_logits"]
    pred = model.cam_and_sgc(inf["end_points"], valid, size, None, sgc_bn_training=True)
    out["predicted_image_labels"] = pred["labels"]
    out["cam_predicted_labels"] = with_background(pred["cam"])
    out["sgc_logits_predicted_labels"] = pred["sgc_logits"]

    # Training-mode batch norm, dropout off.
    load()
    train = dl.forward(image, training=True, dropout=False)
    out["semantic_logits_train_mode"] = train["logits"]
    out["cls_logits_train_mode"] = train["cls_logits"]
    out["sgc_logits_train_mode_backbone"] = model.cam_and_sgc(
        train["end_points"], valid, size, labels, dropout=False
    )["sgc_logits"]

    # The weak branch exactly as the train step runs it (ground-truth image labels).
    load()
    branch = model.pseudo_labels(image, valid, image_labels=labels, dropout=False)
    out["sgc_logits_upsampled"] = branch["sgc_logits_upsampled"]
    out["pseudo_label"] = branch["probs"]
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(f, PARITY_DIR) for f in FILES])
def test_parity_with_official_graph(path, parity_checkpoints):
    ref = dict(np.load(path))
    outputs = [k for k in ref if k not in INPUT_KEYS and not k.startswith("tol/")]
    ours = ours_for(ref, parity_checkpoints(str(ref["model_variant"]), int(ref["checkpoint_seed"])))
    unknown = [k for k in outputs if k not in ours]
    assert not unknown, f"{os.path.basename(path)}: keys this test does not compute: {unknown}"
    failures = []
    for key in outputs:
        assert f"tol/{key}" in ref, f"{path}: no tol/{key}"
        want, got = ref[key], ours[key]
        assert got.shape == want.shape, f"{key}: shape {got.shape} vs reference {want.shape}"
        err = np.abs(got.astype(np.float64) - want)
        scale = np.abs(want).max()
        rel = err.max() / scale if scale > 0 else err.max()
        WORST[(os.path.basename(path), key)] = (rel, float(ref[f"tol/{key}"]))
        if rel > ref[f"tol/{key}"]:
            worst = np.unravel_index(np.argmax(err), err.shape)
            failures.append(
                f"{key}: max|ours-ref| {err.max():.3g} > tol {float(ref[f'tol/{key}']):.3g}"
                f" x max|ref| {scale:.3g} (rel {rel:.3g}) at {worst}: "
                f"ours {got[worst]:.6g} ref {want[worst]:.6g}"
            )
    print(f"\n{os.path.basename(path)}: worst relative error per key")
    for key in outputs:
        rel, tol = WORST[(os.path.basename(path), key)]
        print(f"  {key:42s} {rel:9.2e}  (tol {tol:.1e})")
    assert not failures, f"{os.path.basename(path)}:\n" + "\n".join(failures)
