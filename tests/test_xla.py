"""XLA: the training step compiled with jit_compile trains as the plain graph does.

Two steps of a tiny model in semi and weakly mode from the same weights on the same
batches, with and without XLA. XLA fuses ops and reorders the terms of sums, so the
numbers are not bitwise equal. Tolerances:
- losses, rtol 1e-4: the first step's loss sees only the forward pass (float32 rounding,
  2^-24 per operation, stays orders below); the second sees the weights the first update
  made, so a wrong or missing gradient term would move it by about its share of the
  update (measured change between the steps: 2e-2 relative), far above 1e-4;
- the weights' change over the two steps (the update, not the weight, is what XLA
  computes), in norm relative to the plain step's change. Weakly: 5e-3 (measured
  2.3e-4), rounding that grows along the backward chain to the first layers, where each
  conv feeds a batch norm on 2 images whose backward subtracts nearly equal terms.
  Semi: 5e-2 (measured 1.5e-2), most likely because the extra images' Grad-CAM takes the classes
  whose sigmoid(logit) >= 0.5 (wss.method.gradcam), a threshold that a tiny untrained
  classifier (logits near 0) sits on: a class that flips on a rounding difference changes
  that image's CAM, SGC and pseudo label. A dropped loss term or a wrong gradient
  changes the update by its whole share (order 1), far above either.
Dropout is switched off: XLA's random numbers differ from the TF kernels' for the same
seed, which changes the masks but not the math.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wss.benchmarking.synthetic import synthetic_batches
from wss.distribute import make_train_function
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel

# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = pytest.mark.slow

CONFIG = dict(
    num_classes=5, width_multiplier=0.0625, middle_flow_units=1, aspp_depth=8, decoder_depth=8
)


def two_steps(mode, jit_compile, initial=None):
    """(initial weights, weights after 2 steps, per-step total losses)."""
    keras.utils.set_random_seed(0)
    model = PseudoSegModel(deeplab_config=CONFIG, options=MethodOptions(mode=mode))
    model.build()
    # XLA draws other random numbers than the TF kernels from the same seeds, so the
    # dropout masks would differ: dropout is off here (it is no op XLA cannot compile).
    for layer in (model.deeplab.aspp.dropout, model.deeplab.cls_dropout):
        layer.rate = 0.0
    if initial is not None:
        for v, value in zip(model.weights, initial):
            v.assign(value)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer)
    start = [v.numpy() for v in model.weights]
    batches = [synthetic_batches(2, 2, 33, 5, seed=s) for s in (1, 2)]
    dataset = tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *t: tf.stack(t), *batches)
    )
    iterator = iter(dataset)
    run = make_train_function(tf.distribute.get_strategy(), model, jit_compile)
    losses = [float(run(iterator, tf.constant(1))["total_loss"]) for _ in range(2)]
    return start, [v.numpy() for v in model.weights], losses


@pytest.mark.parametrize("mode, tolerance", [("semi", 5e-2), ("weakly", 5e-3)])
def test_xla_step_matches_the_graph_step(mode, tolerance):
    start, plain, plain_losses = two_steps(mode, False)
    _, compiled, xla_losses = two_steps(mode, True, initial=start)
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-4)
    delta_plain = [p - s for p, s in zip(plain, start)]
    delta_xla = [c - s for c, s in zip(compiled, start)]
    norm = np.sqrt(sum(float((d**2).sum()) for d in delta_plain))
    assert norm > 0, "the steps changed no weight"
    error = np.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(delta_plain, delta_xla)))
    assert error <= tolerance * norm, (error, norm)
