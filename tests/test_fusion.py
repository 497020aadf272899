"""Tests for wss.method.fusion against numpy references of the release's fusion."""

import numpy as np
import pytest
import tensorflow as tf

from wss.errors import ConfigError
from wss.method import fusion
from wss.method.options import MethodOptions


def np_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def np_sharpen(p, t):
    q = p ** (1.0 / t)
    return q / q.sum(axis=-1, keepdims=True)


def np_release_scale(p, m):
    v = np.concatenate([p, m], axis=0).astype(np.float64)
    return 1.0 / np.sqrt(np.mean(v**2) + 1e-8)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    p = (rng.normal(size=(2, 3, 4, 5)) * 3.0).astype(np.float32)
    m = (rng.normal(size=(2, 3, 4, 5)) * 0.7 + 1.0).astype(np.float32)
    return p, m


def test_logit_scale_release_is_batch_rms(logits):
    p, m = logits
    s = fusion.logit_scale(p, m, form="release")
    assert s.shape == ()
    np.testing.assert_allclose(s.numpy(), np_release_scale(p, m), rtol=1e-5)


def test_logit_scale_paper_uses_sum(logits):
    p, m = logits
    v = np.concatenate([p, m], axis=0).astype(np.float64)
    expected = 1.0 / np.sqrt(np.sum(v**2) + 1e-8)
    s = fusion.logit_scale(p, m, form="paper")
    assert s.shape == ()
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-5)
    # sum = mean * count, so the two forms differ by exactly sqrt(count).
    ratio = fusion.logit_scale(p, m, form="release").numpy() / s.numpy()
    np.testing.assert_allclose(ratio, np.sqrt(v.size), rtol=1e-4)


def test_logit_scale_pixel_form(logits):
    p, m = logits
    s = fusion.logit_scale(p, m, form="pixel")
    assert s.shape == (2, 3, 4, 1)
    expected = 1.0 / np.sqrt((p.astype(np.float64) ** 2 + m**2).sum(-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-5)


def test_logit_scale_rejects_unknown_form(logits):
    with pytest.raises(ValueError):
        fusion.logit_scale(*logits, form="l1")


def test_fusion_with_release_norm_and_sharpening(logits):
    p, m = logits
    s = np_release_scale(p, m)
    fused = 0.5 * np_softmax(s * p) + 0.5 * np_softmax(s * m)
    out = fusion.fuse(p, m, MethodOptions(source="fusion", gamma=0.5, temperature=0.5))
    assert out.dtype == tf.float32 and out.shape == p.shape
    np.testing.assert_allclose(out.numpy(), np_sharpen(fused, 0.5), atol=1e-6)
    np.testing.assert_allclose(out.numpy().sum(-1), 1.0, atol=1e-6)


def test_fusion_gamma_weights_decoder(logits):
    p, m = logits
    s = np_release_scale(p, m)
    fused = 0.3 * np_softmax(s * p) + 0.7 * np_softmax(s * m)
    out = fusion.fuse(p, m, MethodOptions(gamma=0.3, temperature=0.7))
    np.testing.assert_allclose(out.numpy(), np_sharpen(fused, 0.7), atol=1e-6)


def test_fusion_without_norm_is_plain_average(logits):
    p, m = logits
    fused = 0.5 * np_softmax(p) + 0.5 * np_softmax(m)
    out = fusion.fuse(p, m, MethodOptions(logit_norm=False, temperature=1.0))
    np.testing.assert_allclose(out.numpy(), fused, atol=1e-6)


def test_fusion_paper_norm_flattens(logits):
    p, m = logits
    s = 1.0 / np.sqrt(np.sum(np.concatenate([p, m]).astype(np.float64) ** 2) + 1e-8)
    fused = 0.5 * np_softmax(s * p) + 0.5 * np_softmax(s * m)
    out = fusion.fuse(p, m, MethodOptions(norm_form="paper", temperature=1.0))
    np.testing.assert_allclose(out.numpy(), fused, atol=1e-6)


def test_release_norm_is_scale_invariant(logits):
    p, m = logits
    a = fusion.fuse(p, m, MethodOptions())
    b = fusion.fuse(7.0 * p, 7.0 * m, MethodOptions())
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_decoder_only_source_has_no_norm(logits):
    p, _ = logits
    out = fusion.fuse(p, None, MethodOptions(source="decoder", temperature=0.5))
    np.testing.assert_allclose(out.numpy(), np_sharpen(np_softmax(p), 0.5), atol=1e-6)
    # logit_norm must not change a single-source label.
    off = fusion.fuse(p, None, MethodOptions(source="decoder", logit_norm=False))
    np.testing.assert_allclose(out.numpy(), off.numpy(), atol=0)


def test_sgc_only_source_has_no_norm(logits):
    p, m = logits
    out = fusion.fuse(p, m, MethodOptions(source="sgc", temperature=0.5))
    np.testing.assert_allclose(out.numpy(), np_sharpen(np_softmax(m), 0.5), atol=1e-6)


def test_hard_labels_skip_sharpening(logits):
    p, m = logits
    s = np_release_scale(p, m)
    fused = 0.5 * np_softmax(s * p) + 0.5 * np_softmax(s * m)
    out = fusion.fuse(p, m, MethodOptions(soft_labels=False, temperature=0.5))
    np.testing.assert_allclose(out.numpy(), fused, atol=1e-6)
    np.testing.assert_array_equal(out.numpy().argmax(-1), fused.argmax(-1))


def test_sharpen_values_identity_and_stability():
    rng = np.random.default_rng(1)
    probs = np_softmax(rng.normal(size=(4, 6)).astype(np.float32))
    np.testing.assert_allclose(
        fusion.sharpen(probs, 0.5).numpy(), np_sharpen(probs, 0.5), atol=1e-6
    )
    np.testing.assert_allclose(fusion.sharpen(probs, 1.0).numpy(), probs, atol=0)
    # Near-uniform over many classes with tiny T: naive P^(1/T) underflows to 0/0.
    flat = np.full((1, 81), 1.0 / 81, np.float32)
    flat[0, 3] += 1e-3
    out = fusion.sharpen(flat, 0.01).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert out[0].argmax() == 3


def test_no_gradient_flows_into_pseudo_labels(logits):
    p, m = (tf.constant(x) for x in logits)
    weights = tf.constant(np.random.default_rng(2).normal(size=p.shape).astype(np.float32))
    for source in ("fusion", "decoder", "sgc"):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([p, m])
            out = fusion.fuse(p, m, MethodOptions(source=source))
            loss = tf.reduce_sum(out * weights)
        for g in tape.gradient(loss, [p, m]):
            assert g is None or np.all(g.numpy() == 0)


def test_mixed_precision_inputs_give_float32(logits):
    p, m = logits
    out = fusion.fuse(tf.constant(p, tf.float16), tf.constant(m, tf.bfloat16), MethodOptions())
    assert out.dtype == tf.float32
    ref = fusion.fuse(p, m, MethodOptions())
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=2e-2)


def test_input_validation(logits):
    p, m = logits
    with pytest.raises(ValueError):
        fusion.fuse(p, None, MethodOptions(source="fusion"))
    with pytest.raises(ValueError):
        fusion.fuse(p, m[:, :2], MethodOptions(source="fusion"))
    with pytest.raises(ValueError, match="'cam'"):
        fusion.get_rule("cam")
    with pytest.raises(ConfigError, match="'cam'"):
        MethodOptions(source="cam")


def test_confidence_mask(logits):
    probs = np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]], np.float32)
    np.testing.assert_array_equal(fusion.confidence_mask(probs, 0.6).numpy(), [1, 0, 1])
    np.testing.assert_array_equal(fusion.confidence_mask(probs, 0.0).numpy(), [1, 1, 1])


@pytest.fixture
def registry(monkeypatch):
    """fusion.RULES as a copy the test may register into (restored afterwards)."""
    monkeypatch.setattr(fusion, "RULES", dict(fusion.RULES))
    return fusion.RULES


def test_a_new_rule_is_one_registered_function(registry, logits):
    """Adding a pseudo-label source: one function and its registry line; options
    validation, the model's fusion and the calibration's variants pick it up."""
    from tests.conftest import tiny_deeplab_config
    from wss.evaluation import reliability
    from wss.model import PseudoSegModel

    @fusion.register_fusion("max")
    def max_rule(decoder_logits, sgc_logits, options):
        """The larger of the two softmaxes, renormalised over the classes."""
        most = tf.maximum(tf.nn.softmax(decoder_logits), tf.nn.softmax(sgc_logits))
        return most / tf.reduce_sum(most, axis=-1, keepdims=True)

    p, m = logits
    most = np.maximum(np_softmax(p), np_softmax(m))
    expected = np_sharpen(most / most.sum(-1, keepdims=True), 0.5)
    options = MethodOptions(source="max", temperature=0.5)
    assert options.uses_sgc and options.uses_classifier
    np.testing.assert_allclose(fusion.fuse(p, m, options).numpy(), expected, atol=1e-6)
    model = PseudoSegModel(deeplab_config=tiny_deeplab_config(), options=options)
    branch = {"weak": {"logits": tf.constant(p)}, "sgc_logits_upsampled": tf.constant(m)}
    np.testing.assert_allclose(model.fuse(branch).numpy(), expected, atol=1e-6)
    assert {"max", "max_sharpened"} <= set(reliability.pseudo_label_variants())
    plain = reliability.variant_options(options, "max")
    assert (plain.source, plain.temperature) == ("max", 1.0)
    with pytest.raises(ValueError, match="already registered"):
        fusion.register_fusion("max")(max_rule)
