"""keras-hub encoders under PseudoSeg (deeplab_ext/hub_backbone.py), without a network.

Tiny ResNet, MiT and DINOv2 encoders built from architectures run one semi-supervised step
whose losses reach what the method says they reach; a tiny MiT saved with keras-hub's
`save_to_preset` into a temporary directory is loaded (weights and image converter),
trained, resumed, evaluated, exported and served.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import (
    NUM_CLASSES,
    TINY_HUB_ARCHITECTURES,
    gin_bindings,
    gin_param_flags,
    make_demo,
)
from wss.benchmarking.synthetic import synthetic_batches
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel

keras_hub = pytest.importorskip("keras_hub")

MIT = TINY_HUB_ARCHITECTURES["MiTBackbone"]
DINOV2 = TINY_HUB_ARCHITECTURES["DINOV2Backbone"]
RESNET = TINY_HUB_ARCHITECTURES["ResNetBackbone"]
# (architecture, natural output stride, decoder level, hypercolumn levels)
FAMILIES = {
    "resnet": (RESNET, 32, "P2", ("P5", "P4")),
    "mit": (MIT, 32, "P1", ("P4", "P3")),
    "dinov2": (DINOV2, 14, "stage1", ("stage4", "stage3")),
}
CROP = 33


def hub_config(architecture=None, output_stride=32, image_size=CROP, **options):
    """DeepLabV3Plus keywords of a tiny model over a keras-hub encoder."""
    backbone_options = {"image_size": image_size, **options}
    if architecture is not None:
        backbone_options["architecture"] = architecture
    return dict(
        num_classes=NUM_CLASSES,
        backbone="keras_hub",
        output_stride=output_stride,
        atrous_rates=(1, 2, 3),
        aspp_depth=8,
        decoder_depth=8,
        backbone_options=backbone_options,
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_semi_step_reaches_the_variables_each_loss_should(family):
    architecture, stride, decoder_level, hypercolumn = FAMILIES[family]
    model = PseudoSegModel(
        deeplab_config=hub_config(architecture, stride), options=MethodOptions(mode="semi")
    )
    model.build()
    backbone = model.deeplab.backbone
    assert model.deeplab.low_level_end_point == decoder_level
    assert backbone.hypercolumn_end_points == hypercolumn
    assert backbone.end_point_stride(backbone.feature_end_point) == stride
    labeled, extra = synthetic_batches(2, 2, CROP, NUM_CLASSES, seed=3)
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        losses, outputs = model.compute_losses((labeled, extra), dropout=False)
        probs = tf.reduce_sum(outputs["branch"]["probs"])
    # DeepLab's feature sizes at a 4k + 1 crop: ceil(33 / stride).
    end_points = model.deeplab.extract_features(labeled["image"])
    for name, tensor in end_points.items():
        s = backbone.end_point_stride(name)
        assert tensor.shape[1:] == (-(-CROP // s),) * 2 + (backbone.end_point_channels(name),)

    def reached(term):
        grads = tape.gradient(losses[term], variables)
        return {
            v.path
            for v, g in zip(variables, grads)
            if g is not None and np.abs(tf.convert_to_tensor(g).numpy()).max() > 0
        }

    encoder = {v.path for v in backbone.trainable_variables}
    sgc = {v.path for v in model.sgc.trainable_variables}
    head = {v.path for v in model.deeplab.cls_logits.trainable_variables}
    segmenter = {v.path for v in model.deeplab.trainable_variables} - head
    for term in ("semantic", "consistency", "cls", "self_attention", "total"):
        assert np.isfinite(losses[term].numpy()) and losses[term].numpy() > 0, term
    unused = encoder - reached("total")
    # DINOv2's mask token is used only for masked-image training.
    assert {p.rsplit("/", 1)[-1] for p in unused} <= {"mask_token"}, unused
    for term in ("semantic", "consistency"):  # L_s, L_u: the whole segmenter
        assert reached(term) == segmenter - unused, term
    assert reached("cls") == (encoder - unused) | head  # L_x: encoder + classifier
    assert reached("self_attention") == sgc  # L_sa: the SGC only
    assert all(g is None for g in tape.gradient(probs, variables))  # P is stop-gradient
    kernels = backbone.regularized_kernels()
    assert kernels and all(k.path in encoder and len(k.shape) >= 2 for k in kernels)


def test_unsupported_options_are_errors():
    with pytest.raises(ValueError, match="natural output stride 32"):
        PseudoSegModel(deeplab_config=hub_config(RESNET, output_stride=16))
    with pytest.raises(ValueError, match="multi_grid"):
        PseudoSegModel(deeplab_config=dict(hub_config(RESNET), multi_grid=(1, 2, 4)))
    with pytest.raises(ValueError, match="does not support the options \\['crop'\\]"):
        PseudoSegModel(deeplab_config=hub_config(RESNET, crop=3))
    with pytest.raises(ValueError, match="exactly one of `preset`"):
        PseudoSegModel(deeplab_config=hub_config(None))
    with pytest.raises(ValueError, match="not a keras-hub FeaturePyramidBackbone"):
        PseudoSegModel(deeplab_config=hub_config({"class_name": "BertBackbone"}))
    model = PseudoSegModel(deeplab_config=hub_config(RESNET))
    model.build()
    with pytest.raises(ValueError, match="image_size'\\] >= 65"):
        model.deeplab.extract_features(tf.zeros([1, 65, 65, 3]))


@pytest.mark.slow
def test_preset_directory_trains_resumes_evaluates_exports_and_predicts(tmp_path):
    from wss import export, predict, train
    from wss.checkpointing import training_checkpoint
    from wss.experiment import parse_run_config
    from wss.model import build_model
    from wss.schedule import build_optimizer

    preset = str(tmp_path / "preset")
    arch = {k: v for k, v in MIT.items() if k != "class_name"}
    encoder = keras_hub.models.MiTBackbone(**arch, image_shape=(64, 64, 3))
    encoder.save_to_preset(preset)
    scale, offset = [0.01, 0.02, 0.03], [-1.0, -2.0, -3.0]
    keras_hub.layers.MiTImageConverter(scale=scale, offset=offset).save_to_preset(preset)
    data = make_demo(tmp_path / "demo_data")
    model_dir = str(tmp_path / "run")
    gin_file = "gin/demo_mit.gin"  # the demo's splits and schedule; the tiny model below
    bindings = (
        gin_bindings("Experiment", {"crop_size": CROP})
        + gin_bindings("Experiment", {"labeled_batch_size": 2, "extra_batch_size": 2})
        + gin_bindings(
            "ModelSettings",
            {
                k: v
                for k, v in hub_config(image_size=65, preset=preset).items()
                if k != "num_classes"
            },
        )
        + ("TrainLoop.checkpoint_every = 2", "TrainLoop.log_every = 1")
    )

    # The model training builds holds the saved encoder's weights before the first step.
    config = parse_run_config([gin_file], bindings)
    model = build_model(NUM_CLASSES, config.model, config.method)
    backbone = model.deeplab.backbone
    loaded = [v.numpy() for v in backbone.pyramid.weights]
    saved = [v.numpy() for v in encoder.weights]
    assert len(loaded) == len(saved)
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)
    x = np.full([1, 2, 2, 3], 100.0, np.float32)
    np.testing.assert_allclose(
        backbone.preprocess(x)[0, 0, 0], 100.0 * np.array(scale) + offset, rtol=1e-6
    )

    def run(steps, evaluate):
        argv = ["train", f"--gin_file={gin_file}", f"--model_dir={model_dir}"]
        argv += [f"--dataset_dir={data}"]
        argv += ["--images_every=0", f"--eval_at_end={evaluate}"] + gin_param_flags(
            bindings + (f"Experiment.num_steps = {steps}",)
        )
        return train.main(argv)

    run(2, evaluate=False)
    logs = run(4, evaluate=True)  # resumes from ckpt-2, trains 2 more, evaluates
    assert np.isfinite(logs["total_loss"])
    assert os.path.exists(os.path.join(model_dir, "eval_val_4.json"))
    restored = build_model(NUM_CLASSES, config.model, config.method)
    # The optimizer the run used (demo_mit.gin picks AdamW), so its slots match.
    optimizer = build_optimizer(dataclasses.replace(config.experiment, num_steps=4), restored)
    path = tf.train.latest_checkpoint(model_dir)
    training_checkpoint(restored, optimizer).restore(path).assert_consumed()
    assert path.endswith("ckpt-4") and int(optimizer.iterations.numpy()) == 4
    trained = [v.numpy() for v in restored.deeplab.backbone.pyramid.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(trained, saved))

    export_dir = str(tmp_path / "export")
    export.main(["export", f"--model_dir={model_dir}", f"--export_dir={export_dir}"])
    image = np.random.RandomState(0).randint(0, 255, (50, 60, 3)).astype(np.uint8)
    served = tf.saved_model.load(export_dir).signatures["serving_default"](images=image[None])
    expected = restored.deeplab.predict_logits(
        tf.pad(
            tf.constant(image[None], tf.float32),
            [[0, 0], [0, 15], [0, 5], [0, 0]],
            constant_values=127.5,
        )
    )[:, :50, :60]
    np.testing.assert_array_equal(served["class_map"][0], tf.argmax(expected[0], -1))
    Image.fromarray(image).save(tmp_path / "a.png")
    written = predict.main(
        [
            "predict",
            f"--export_dir={export_dir}",
            f"--input={tmp_path / 'a.png'}",
            f"--output_dir={tmp_path / 'pred'}",
        ]
    )
    assert np.array_equal(np.asarray(Image.open(written[0])), served["class_map"][0])
