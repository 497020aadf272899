"""DeepLabv3+ in Keras: shapes, end points, config, a block against plain tf.nn, checkpoints."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.checkpoint import CheckpointMismatchError, load_tf1_checkpoint, save_tf1_checkpoint
from deeplab_ext.deeplab import DeepLabV3Plus
from deeplab_ext.layers import SplitSeparableConv
from tests.conftest import TINY_MODEL, official_manifest


def tiny(**kw):
    model = DeepLabV3Plus(num_classes=5, **{**TINY_MODEL, **kw})
    model.build()
    return model


def randomize(model, seed=0):
    """Non-trivial values everywhere, including batch-norm statistics."""
    rng = np.random.default_rng(seed)
    for name, var in model.tf1_variable_map().items():
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, var.shape)
        else:
            value = rng.normal(0, 0.3, var.shape)
        var.assign(value.astype("float32"))


@pytest.mark.parametrize(
    "output_stride,rates", [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))]
)
@pytest.mark.parametrize("crop", [65, 97])
def test_output_shapes_follow_deeplab_size_rule(output_stride, rates, crop):
    model = tiny(output_stride=output_stride, atrous_rates=rates)
    out = model.forward(tf.zeros([2, crop, crop, 3]))
    feat = (crop - 1) // output_stride + 1
    dec = (crop - 1) // 4 + 1
    assert out["logits"].shape == (2, dec, dec, 5)
    assert out["cls_logits"].shape == (2, 4)
    assert out["end_points"]["exit_flow/block2"].shape[1:3] == (feat, feat)
    assert out["end_points"]["entry_flow/block1"].shape[1:3] == ((crop - 1) // 4 + 1,) * 2
    assert out["end_points"][model.low_level_end_point].shape[1:3] == (dec, dec)
    assert model.predict_logits(tf.zeros([1, crop, crop, 3])).shape == (1, crop, crop, 5)


def test_unreachable_output_stride_is_an_error():
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Plus(output_stride=64, **TINY_MODEL)
    with pytest.raises(ValueError, match="even"):
        DeepLabV3Plus(output_stride=15, **TINY_MODEL)


def test_get_config_round_trip_gives_same_variable_layout():
    model = tiny(output_stride=8, atrous_rates=(12, 24, 36), multi_grid=(1, 2, 4))
    clone = DeepLabV3Plus.from_config(model.get_config())
    clone.build()
    assert clone.get_config() == model.get_config()
    shapes = {n: tuple(v.shape) for n, v in model.tf1_variable_map().items()}
    assert shapes == {n: tuple(v.shape) for n, v in clone.tf1_variable_map().items()}


def test_variants_and_options_change_layout_as_deeplab():
    m41 = DeepLabV3Plus(backbone="xception_41", width_multiplier=0.0625)
    m41.build()
    names = m41.tf1_variable_map()
    assert (
        "xception_41/middle_flow/block1/unit_8/xception_module/separable_conv3_pointwise/weights"
        in names
    )
    assert not any("unit_9" in n for n in names)
    m71 = DeepLabV3Plus(backbone="xception_71", width_multiplier=0.0625, middle_flow_units=1)
    m71.build()
    assert (
        "xception_71/entry_flow/block5/unit_1/xception_module/shortcut/weights"
        in m71.tf1_variable_map()
    )
    assert m71.low_level_end_point.startswith("entry_flow/block3/")
    plain = tiny(
        aspp_with_separable_conv=False,
        decoder_use_separable_conv=False,
        add_image_level_feature=False,
    )
    names = plain.tf1_variable_map()
    assert names["aspp1/weights"].shape == (3, 3, 2048 // 16, TINY_MODEL["aspp_depth"])
    assert "decoder/decoder_conv0/weights" in names and "image_pooling/weights" not in names


def test_full_model_matches_the_official_variable_manifest():
    model = DeepLabV3Plus()
    model.build()
    manifest = official_manifest("xception_65")
    ours = {n: tuple(v.shape) for n, v in model.tf1_variable_map().items()}
    pseudoseg_only = {
        n for n in manifest if n.startswith(("hyper_column/", "pixel_normalization/"))
    }
    assert ours == {n: s for n, s in manifest.items() if n not in pseudoseg_only}


def test_full_size_model_runs_at_crop_513():
    model = DeepLabV3Plus()
    out = model.forward(tf.fill([1, 513, 513, 3], 127.5))
    assert out["logits"].shape == (1, 129, 129, 21)
    assert out["end_points"]["exit_flow/block2"].shape == (1, 33, 33, 2048)
    assert np.isfinite(out["logits"].numpy()).all()


def _bn(x, var, eps, train):
    mean, variance = (
        (np.mean(x, (0, 1, 2)), np.var(x, (0, 1, 2)))
        if train
        else (var["BatchNorm/moving_mean"], var["BatchNorm/moving_variance"])
    )
    return (x - mean) / np.sqrt(variance + eps) * var["BatchNorm/gamma"] + var["BatchNorm/beta"]


@pytest.mark.parametrize("stride,rate,train", [(1, 1, False), (2, 1, False), (1, 2, True)])
def test_split_separable_conv_matches_plain_tf_nn(stride, rate, train):
    layer = SplitSeparableConv(6, "sep", stride=stride, rate=rate, activation="relu")
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 4)).astype("float32")
    layer(x)
    rng = np.random.default_rng(2)
    values = {}
    for name, var in layer.tf1_variable_map().items():
        value = rng.uniform(0.5, 2, var.shape) if "variance" in name else rng.normal(size=var.shape)
        var.assign(value.astype("float32"))
        values[name] = value.astype("float32")
    dw = {
        k[len("sep_depthwise/") :]: v for k, v in values.items() if k.startswith("sep_depthwise/")
    }
    pw = {
        k[len("sep_pointwise/") :]: v for k, v in values.items() if k.startswith("sep_pointwise/")
    }
    # Reference: DeepLab pads strided convs explicitly (1 before, 1 after for k=3).
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]) if stride > 1 else x
    ref = tf.nn.depthwise_conv2d(
        padded,
        dw["depthwise_weights"],
        [1, stride, stride, 1],
        "VALID" if stride > 1 else "SAME",
        dilations=[rate, rate],
    ).numpy()
    ref = np.maximum(_bn(ref, dw, 1e-3, train), 0)
    ref = tf.nn.conv2d(ref, pw["weights"], 1, "SAME").numpy()
    ref = np.maximum(_bn(ref, pw, 1e-3, train), 0)
    ours = layer(x, training=train).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_tf1_checkpoint_round_trip_sets_exact_values(tmp_path):
    source = tiny()
    randomize(source, seed=3)
    prefix = save_tf1_checkpoint(source, str(tmp_path / "model.ckpt"))
    target = tiny()
    report = load_tf1_checkpoint(target, prefix)
    assert not report.missing and not report.unused
    assert len(report.loaded) == len(source.tf1_variable_map())
    for name, var in target.tf1_variable_map().items():
        np.testing.assert_array_equal(var.numpy(), source.tf1_variable_map()[name].numpy())
    x = tf.random.uniform([2, 65, 65, 3], 0, 255, seed=1)
    np.testing.assert_allclose(target.forward(x)["logits"], source.forward(x)["logits"], rtol=1e-5)


def _write(prefix, tensors):
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )


def test_strict_loader_names_missing_unused_and_misshaped(tmp_path):
    model = tiny()
    values = {n: v.numpy() for n, v in model.tf1_variable_map().items()}
    dropped = "decoder/decoder_conv1_pointwise/weights"
    partial = {n: v for n, v in values.items() if n != dropped}
    partial["extra/weights"] = np.zeros([1], "float32")
    partial["global_step"] = np.int64(7)
    partial["aspp0/weights/Momentum"] = values["aspp0/weights"]
    _write(str(tmp_path / "a"), partial)
    with pytest.raises(CheckpointMismatchError) as err:
        load_tf1_checkpoint(model, str(tmp_path / "a"))
    assert dropped in str(err.value) and "extra/weights" in str(err.value)
    assert "Momentum" not in str(err.value)
    report = load_tf1_checkpoint(model, str(tmp_path / "a"), allow_missing=True, allow_unused=True)
    assert report.missing == [dropped] and report.unused == ["extra/weights"]
    assert sorted(report.training_state) == ["aspp0/weights/Momentum", "global_step"]

    bad = dict(values)
    bad["aspp0/weights"] = np.zeros([1, 1, 3, 3], "float32")
    _write(str(tmp_path / "b"), bad)
    with pytest.raises(CheckpointMismatchError, match="aspp0/weights: checkpoint"):
        load_tf1_checkpoint(model, str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_tf1_checkpoint(model, str(tmp_path / "nothing_here"))


def test_skip_logits_leaves_imagenet_classifier_and_semantic_logits_out(tmp_path):
    model = tiny()
    values = {
        n: v.numpy() for n, v in model.tf1_variable_map().items() if not n.startswith("logits/")
    }
    # An ImageNet checkpoint's classifier has 1001 outputs.
    values["xception_65/logits/weights"] = np.zeros([1, 1, 128, 1001], "float32")
    values["xception_65/logits/biases"] = np.zeros([1001], "float32")
    _write(str(tmp_path / "imagenet"), values)
    with pytest.raises(CheckpointMismatchError):
        load_tf1_checkpoint(model, str(tmp_path / "imagenet"))
    report = load_tf1_checkpoint(model, str(tmp_path / "imagenet"), skip_logits=True)
    assert "logits/semantic/weights" in report.skipped
    assert "xception_65/logits/weights" in report.skipped
    assert not report.missing and not report.unused


def test_convert_checkpoint_writes_keras_weights(tmp_path):
    from deeplab_ext.convert_checkpoint import convert

    source = tiny()
    randomize(source, seed=5)
    prefix = save_tf1_checkpoint(source, str(tmp_path / "m.ckpt"))
    out = str(tmp_path / "m.weights.h5")
    report = convert(
        prefix,
        out,
        num_classes=5,
        skip_logits=False,
        allow_missing=False,
        allow_unused=False,
        check_crop=33,
        **TINY_MODEL,
    )
    assert len(report.loaded) == len(source.tf1_variable_map())
    restored = tiny()
    restored.load_weights(out)
    x = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=2)
    np.testing.assert_allclose(
        restored.forward(x)["logits"], source.forward(x)["logits"], rtol=1e-5
    )


@pytest.mark.parametrize("variant", ["resnet_v1_50_beta", "resnet_v1_101_beta"])
def test_resnet_layout_matches_the_official_manifest(variant):
    model = DeepLabV3Plus(backbone=variant)
    model.build()
    manifest = official_manifest(variant)
    pseudoseg_only = {
        n for n in manifest if n.startswith(("hyper_column/", "pixel_normalization/"))
    }
    ours = {n: tuple(v.shape) for n, v in model.tf1_variable_map().items()}
    assert ours == {n: s for n, s in manifest.items() if n not in pseudoseg_only}
    assert model.cls_dropout.rate == 0.0  # DeepLab's ResNet head has no dropout


@pytest.mark.parametrize("variant", ["resnet_v1_50_beta", "resnet_v1_101_beta", "resnet_v1_50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_resnet_shapes_and_end_points(variant, output_stride):
    model = DeepLabV3Plus(
        num_classes=5,
        backbone=variant,
        output_stride=output_stride,
        width_multiplier=0.0625,
        aspp_depth=8,
        decoder_depth=8,
    )
    out = model.forward(tf.zeros([1, 65, 65, 3]))
    feat = (65 - 1) // output_stride + 1
    assert out["end_points"]["block4"].shape[1:3] == (feat, feat)
    assert out["end_points"]["block1"].shape[1:3] == (9, 9)  # block1 ends with stride 2
    assert out["logits"].shape == (1, 17, 17, 5)
    names = model.tf1_variable_map()
    scope = variant.replace("_beta", "")
    root = f"{scope}/conv1_3/weights" if variant.endswith("beta") else f"{scope}/conv1/weights"
    assert root in names
    units = 23 if "101" in variant else 6
    assert f"{scope}/block3/unit_{units}/bottleneck_v1/conv3/weights" in names
    assert f"{scope}/block3/unit_{units + 1}/bottleneck_v1/conv3/weights" not in names
    assert out["cls_logits"].shape == (1, 4)
    assert model.backbone.units[-1][2].rate == (2 if output_stride == 16 else 4)


def test_resnet_config_round_trip_and_tf1_checkpoint_load(tmp_path):
    source = DeepLabV3Plus(
        num_classes=5,
        backbone="resnet_v1_50_beta",
        output_stride=8,
        atrous_rates=(12, 24, 36),
        multi_grid=(1, 2, 4),
        width_multiplier=0.0625,
        aspp_depth=8,
        decoder_depth=8,
    )
    source.build()
    clone = DeepLabV3Plus.from_config(source.get_config())
    clone.build()
    assert clone.get_config() == source.get_config()
    # output stride 8: block4 runs at rate 4, times the multi-grid (DeepLab)
    assert [m.rate for _, _, m in source.backbone.units[-3:]] == [4, 8, 16]
    randomize(source, seed=7)
    report = load_tf1_checkpoint(clone, save_tf1_checkpoint(source, str(tmp_path / "r50.ckpt")))
    assert not report.missing and not report.unused
    x = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=4)
    np.testing.assert_allclose(clone.forward(x)["logits"], source.forward(x)["logits"], rtol=1e-5)
