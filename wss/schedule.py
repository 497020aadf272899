"""DeepLab's learning-rate policy: polynomial decay to `end` over the run, optional slow start."""

import keras
import tensorflow as tf


class PolyWithSlowStart(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = (base - end) * (1 - step / decay_steps) ** power + end, and
    `slow_start_learning_rate` for the first `slow_start_steps` steps (DeepLab's
    `get_model_learning_rate` with learning_policy='poly')."""

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
        progress = tf.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
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
