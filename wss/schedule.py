"""DeepLab's learning-rate policy and optimizer, as the release trains, and
`build_optimizer`, the optimizer `Experiment.optimizer` names over that schedule.

`PolyWithSlowStart` is DeepLab's `train_utils.get_model_learning_rate` with the 'poly'
policy; `ReleaseMomentum` is TF1's `tf.train.MomentumOptimizer`, which accumulates raw
gradients and applies the current learning rate to the accumulator (Keras's SGD applies
each step's rate as the gradient enters the velocity instead; the two agree while the
rate is constant and differ after it changes, e.g. at the end of a slow start).
"""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="wss")
class PolyWithSlowStart(keras.optimizers.schedules.LearningRateSchedule):
    """DeepLab's 'poly' policy with slow start (`get_model_learning_rate`).

    For step < slow_start_steps: `slow_start_learning_rate`. Afterwards the polynomial
    decay starts from `base_learning_rate` at step `slow_start_steps` and reaches
    `end_learning_rate` at step `decay_steps` (the run's total number of steps):
        s = min(max(step - slow_start_steps, 0), D), D = decay_steps - slow_start_steps
        lr = (base - end) * (1 - s / D) ** power + end
    """

    def __init__(
        self,
        base_learning_rate,
        decay_steps,
        power=0.9,
        end_learning_rate=0.0,
        slow_start_steps=0,
        slow_start_learning_rate=1e-4,
    ):
        self.base_learning_rate = float(base_learning_rate)
        self.decay_steps = int(decay_steps)
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.slow_start_steps = int(slow_start_steps)
        self.slow_start_learning_rate = float(slow_start_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        span = float(max(self.decay_steps - self.slow_start_steps, 1))
        progress = tf.minimum(tf.maximum(step - self.slow_start_steps, 0.0), span) / span
        lr = (self.base_learning_rate - self.end_learning_rate) * tf.pow(
            1.0 - progress, self.power
        ) + self.end_learning_rate
        return tf.where(step < self.slow_start_steps, self.slow_start_learning_rate, lr)

    def get_config(self):
        return dict(
            base_learning_rate=self.base_learning_rate,
            decay_steps=self.decay_steps,
            power=self.power,
            end_learning_rate=self.end_learning_rate,
            slow_start_steps=self.slow_start_steps,
            slow_start_learning_rate=self.slow_start_learning_rate,
        )


@keras.saving.register_keras_serializable(package="wss")
class ReleaseMomentum(keras.optimizers.SGD):
    """SGD with TF1's momentum: a <- momentum * a + g, w <- w - lr * a.

    Same slots ('momentum') and arguments as `keras.optimizers.SGD`; Nesterov is not
    offered (the release does not use it).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, **kwargs):
        if kwargs.pop("nesterov", False):
            raise ValueError("ReleaseMomentum has no Nesterov variant")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        accum = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(accum, ops.add(ops.multiply(accum, momentum), gradient))
        self.assign_sub(variable, ops.multiply(accum, learning_rate))


# ------------------------------------------------------------------ the optimizer


def _momentum(exp, schedule, variables):
    del variables
    return ReleaseMomentum(schedule, momentum=exp.momentum)


def _adamw(exp, schedule, variables):
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=exp.adamw_weight_decay)
    # Decay only the kernels (matrices, convolutions, embeddings): biases and the norms'
    # scales and offsets are 1-D, as in SegFormer's and timm's AdamW recipes.
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
    return optimizer


# Experiment.optimizer -> builder(exp, schedule, trainable variables) -> optimizer.
OPTIMIZERS = {"momentum": _momentum, "adamw": _adamw}


def build_optimizer(exp, model, precision="float32"):
    """The optimizer `exp.optimizer` names (DeepLab's SGD with momentum by default) with
    the poly schedule over `exp.num_steps`, built for the model's trainable variables (so
    its slots exist before a checkpoint is restored)."""
    schedule = PolyWithSlowStart(
        exp.learning_rate,
        exp.num_steps,
        exp.learning_power,
        exp.end_learning_rate,
        exp.slow_start_steps,
        exp.slow_start_learning_rate,
    )
    optimizer = OPTIMIZERS[exp.optimizer](exp, schedule, model.trainable_variables)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer
