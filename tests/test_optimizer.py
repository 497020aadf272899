"""The optimizer as the release runs it: bias gradients doubled, TF1 momentum, DeepLab's poly.

Expected numbers are computed by hand from DeepLab's `train_utils.py`
(`get_model_gradient_multipliers`: x2 for every variable whose name contains 'biases',
last-layer multiplier 1; `get_model_learning_rate`: 'poly' on the step after the slow
start, over training_number_of_steps - slow_start_step) and TF1's MomentumOptimizer
(accumulator a <- m a + g, w <- w - lr a).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_deeplab_config
from wss.experiment import Experiment, ModelSettings
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel
from wss.schedule import PolyWithSlowStart, ReleaseMomentum, build_optimizer

DOUBLED = {"logits/semantic/biases", "xception_65/logits/biases"}


@pytest.fixture(scope="module")
def model():
    m = PseudoSegModel(deeplab_config=tiny_deeplab_config(), options=MethodOptions(mode="semi"))
    m.build()
    return m


def test_gradient_multipliers_double_exactly_the_biases(model):
    names = {id(v): n for n, v in model.tf1_variable_map().items()}
    doubled = {
        names[id(v)] for v in model.trainable_variables if v.path in model.gradient_multipliers()
    }
    assert doubled == DOUBLED
    assert set(model.gradient_multipliers().values()) == {2.0}


def test_one_step_from_zero_momentum_moves_biases_twice_as_far(model):
    lr = 0.01
    model.compile(optimizer=ReleaseMomentum(lr, momentum=0.9))
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]
    before = [v.numpy().copy() for v in variables]
    model.apply_step_gradients(grads, variables)
    names = {id(v): n for n, v in model.tf1_variable_map().items()}
    seen = set()
    for v, g, b in zip(variables, grads, before):
        factor = 2.0 if names[id(v)] in DOUBLED else 1.0
        if factor == 2.0:
            seen.add(names[id(v)])
        # Absolute slack: float32 rounding of w - lr g for |w| ~ 1 (lr g ~ 1e-2).
        np.testing.assert_allclose(
            b - v.numpy(), factor * lr * g.numpy(), rtol=1e-4, atol=1e-6, err_msg=names[id(v)]
        )
    assert seen == DOUBLED


def test_release_momentum_applies_the_current_rate_to_the_accumulator():
    # lr 0.1 at step 0 (slow start), then 0.2 (power 0: constant after the slow start).
    schedule = PolyWithSlowStart(
        0.2, 1000, power=0.0, slow_start_steps=1, slow_start_learning_rate=0.1
    )
    w = keras.Variable(np.ones([1], np.float32))
    opt = ReleaseMomentum(schedule, momentum=0.9)
    opt.apply([tf.constant([1.0])], [w])  # a = 1, w = 1 - 0.1 * 1
    np.testing.assert_allclose(w.numpy(), [0.9], rtol=1e-6)
    opt.apply([tf.constant([2.0])], [w])  # a = 0.9 + 2 = 2.9, w = 0.9 - 0.2 * 2.9
    np.testing.assert_allclose(w.numpy(), [0.32], rtol=1e-6)
    # Keras's SGD would give 0.9 - 0.9 * 0.1 - 0.2 * 2 = 0.41 here.


def test_training_uses_release_momentum(model):
    opt = build_optimizer(Experiment(momentum=0.9), model)
    assert isinstance(opt, ReleaseMomentum) and opt.momentum == 0.9


@pytest.mark.parametrize(
    "step,kwargs,expected",
    [
        # No slow start: base * (1 - step / N) ** 0.9.
        (0, dict(decay_steps=30000), 0.007),
        (15000, dict(decay_steps=30000), 0.007 * 0.5**0.9),  # 0.0037512
        (30000, dict(decay_steps=30000), 0.0),
        (40000, dict(decay_steps=30000), 0.0),  # polynomial_decay clips the step at N
        (15000, dict(decay_steps=30000, end_learning_rate=1e-4), 0.0069 * 0.5**0.9 + 1e-4),
        # Slow start 10 steps at 1e-4, then poly over the remaining 90 steps.
        (0, dict(decay_steps=100, slow_start_steps=10), 1e-4),
        (9, dict(decay_steps=100, slow_start_steps=10), 1e-4),
        (10, dict(decay_steps=100, slow_start_steps=10), 0.007),
        (55, dict(decay_steps=100, slow_start_steps=10), 0.007 * 0.5**0.9),
        (100, dict(decay_steps=100, slow_start_steps=10), 0.0),
    ],
)
def test_poly_schedule_matches_deeplab(step, kwargs, expected):
    lr = PolyWithSlowStart(0.007, power=0.9, slow_start_learning_rate=1e-4, **kwargs)(step)
    np.testing.assert_allclose(float(lr), expected, rtol=1e-5, atol=1e-9)


def test_adamw_decays_the_kernels_only(model):
    # With zero gradients Adam's own update is 0, so one step is the decoupled decay alone:
    # w <- w - lr * weight_decay * w on kernels (2-D and up); 1-D variables stay.
    lr, decay = 0.1, 0.5
    exp = Experiment(optimizer="adamw", adamw_weight_decay=decay, base_learning_rate=lr)
    opt = build_optimizer(exp, model)
    assert isinstance(opt, keras.optimizers.AdamW)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    try:
        opt.apply([tf.zeros_like(v) for v in variables], variables)
        for v, old in zip(variables, before):
            expected = old * (1.0 - lr * decay) if len(old.shape) > 1 else old
            np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)
        assert sum(len(old.shape) > 1 for old in before) > 0
        assert sum(len(old.shape) <= 1 for old in before) > 0
    finally:
        for v, old in zip(variables, before):
            v.assign(old)


def test_adamw_follows_the_poly_schedule(model):
    exp = Experiment(optimizer="adamw", base_learning_rate=0.01, num_steps=10, learning_power=1)
    opt = build_optimizer(exp, model)
    opt.iterations.assign(5)
    assert float(opt.learning_rate) == pytest.approx(0.005)


def test_an_unknown_optimizer_is_a_config_error():
    from wss.errors import ConfigError

    with pytest.raises(ConfigError, match="'adam'.*'momentum', 'adamw'"):
        Experiment(optimizer="adam")


def test_the_run_summary_names_a_non_default_optimizer():
    from wss.training import describe_run

    def steps_line(**kwargs):
        exp = Experiment(dataset_name="demo", crop_size=65, **kwargs)
        lines = describe_run(exp, ModelSettings(), MethodOptions(), "data", "run", 10)
        return next(line for line in lines if "learning rate" in line)

    assert "(adamw)" in steps_line(optimizer="adamw")
    assert "(" not in steps_line()
