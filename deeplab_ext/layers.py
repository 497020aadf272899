"""Building blocks shared by every DeepLab part: conv + batch norm + ReLU, split separable conv
(and the channel rule of a backbone's width multiplier, `scaled_depth`).

Each layer knows the TF1 (slim) names of its variables relative to its scope
(`weights`, `depthwise_weights`, `biases`, `BatchNorm/{gamma,beta,moving_mean,
moving_variance}`), which is how `deeplab_ext.checkpoint` maps official checkpoints onto
our weights. Composite layers prefix their children's names with the children's scopes.
"""

import contextlib

import keras
import tensorflow as tf

# Open `record_batch_norm_updates` logs: {id(moving statistic): number of updates}.
_UPDATE_LOGS = []


def fixed_padding(inputs, kernel_size, rate=1):
    """Pads H and W so a VALID strided conv equals DeepLab's explicit 'SAME' padding."""
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    beg = total // 2
    return tf.pad(inputs, [[0, 0], [beg, total - beg], [beg, total - beg], [0, 0]])


def join_scope(scope, mapping):
    """Prefixes every name in a {name: variable} mapping with `scope/`."""
    return {f"{scope}/{name}": var for name, var in mapping.items()}


def scaled_depth(depth, width_multiplier):
    """Channel count under a backbone's width multiplier (at least 8)."""
    return depth if width_multiplier == 1.0 else max(8, int(round(depth * width_multiplier)))


@keras.saving.register_keras_serializable(package="deeplab_ext")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras batch norm computed with TF's fused kernel, as slim's batch norm in DeepLab.

    One fused op forward and backward instead of separate moment, normalise and scale
    ops (faster on CPU and GPU), and the moving variance is updated with the unbiased
    batch variance, as TF1's fused batch norm does. The normalisation itself is the same
    math as Keras's (biased batch variance in training mode). Inputs are normalised in
    float32, as Keras does, and cast back. Synchronized batch norm, float64 variables (no
    fused kernel) and masks fall back to Keras.

    `update_repeats` (set by `repeated_batch_norm_updates`, 1 otherwise) makes one
    training-mode pass update the moving statistics as that many passes with the same
    batch would: v <- m + decay^k (v - m), the exact result of k updates
    v <- v - (1 - decay)(v - m).
    """

    update_repeats = 1

    def call(self, inputs, training=None, mask=None):
        updates = bool(training) and self.trainable
        if updates:
            for log in _UPDATE_LOGS:
                for var in (self.moving_mean, self.moving_variance):
                    log[id(var)] = log.get(id(var), 0) + self.update_repeats
        if (
            self.synchronized
            or mask is not None
            or self.dtype != "float32"
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
        ):
            decay = self.momentum
            self.momentum = decay**self.update_repeats
            try:
                return super().call(inputs, training=training, mask=mask)
            finally:
                self.momentum = decay
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if updates:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # slim's update v <- v - (1 - decay)(v - m) (no zero-debiasing), `variance`
            # being Bessel-corrected (n / (n - 1), n = B x H x W) by the fused kernel.
            decay = self.momentum**self.update_repeats
            self.moving_mean.assign_sub((self.moving_mean - mean) * (1.0 - decay))
            self.moving_variance.assign_sub((self.moving_variance - variance) * (1.0 - decay))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


def _batch_norms(layer):
    return [
        sub
        for sub in layer._flatten_layers(include_self=True)
        if isinstance(sub, keras.layers.BatchNormalization)
    ]


@contextlib.contextmanager
def repeated_batch_norm_updates(layer, times):
    """Within the block, every training-mode pass through a `FusedBatchNorm` of `layer`
    updates its moving statistics as `times` passes with the same batch would.

    The release runs some passes twice on the same images (e.g. the labeled batch for L_s
    and again for L_x / L_sa); we run them once and count the update twice instead.
    """
    norms = [bn for bn in _batch_norms(layer) if isinstance(bn, FusedBatchNorm)]
    for bn in norms:
        bn.update_repeats = int(times)
    try:
        yield
    finally:
        for bn in norms:
            bn.update_repeats = 1


@contextlib.contextmanager
def record_batch_norm_updates():
    """Yields {id(moving statistic): updates} counting the moving-statistic updates that
    `FusedBatchNorm` layers issue inside the block (repeats included); for tests."""
    log = {}
    _UPDATE_LOGS.append(log)
    try:
        yield log
    finally:
        _UPDATE_LOGS.remove(log)


def synchronize_batch_norms(layer):
    """Makes every batch norm inside `layer` compute its batch statistics across all
    replicas of the tf.distribute strategy (Keras's synchronized batch norm), so that N
    small per-replica batches normalise as one global batch. Returns how many it changed.
    """
    norms = _batch_norms(layer)
    for sub in norms:
        sub.synchronized = True
    return len(norms)


@keras.saving.register_keras_serializable(package="deeplab_ext")
class ConvBN(keras.layers.Layer):
    """A slim-style conv (regular or depthwise) with optional batch norm and ReLU.

    Strided convolutions pad explicitly then run VALID, as DeepLab's `conv2d_same` and
    `separable_conv2d_same` do; stride-1 convolutions use SAME, which pads identically.
    Without batch norm the conv has a bias (slim adds biases only when no normalizer).
    """

    def __init__(
        self,
        filters=None,
        kernel_size=1,
        stride=1,
        rate=1,
        depthwise=False,
        use_bn=True,
        bn_decay=0.9997,
        bn_epsilon=1e-3,
        bn_scale=True,
        activation=None,
        regularize=True,
        kernel_stddev=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not depthwise and filters is None:
            raise ValueError("ConvBN needs `filters` unless depthwise=True")
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.rate = rate
        self.depthwise = depthwise
        self.use_bn = use_bn
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        self.bn_scale = bn_scale
        self.activation = activation
        self.regularize = regularize
        self.kernel_stddev = kernel_stddev
        init = (
            keras.initializers.TruncatedNormal(stddev=kernel_stddev)
            if kernel_stddev
            else "glorot_uniform"
        )
        padding = "valid" if stride > 1 else "same"
        if depthwise:
            self.conv = keras.layers.DepthwiseConv2D(
                kernel_size,
                strides=stride,
                dilation_rate=rate,
                padding=padding,
                use_bias=not use_bn,
                depthwise_initializer=init,
                name="depthwise",
            )
        else:
            self.conv = keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=stride,
                dilation_rate=rate,
                padding=padding,
                use_bias=not use_bn,
                kernel_initializer=init,
                name="conv",
            )
        self.bn = (
            FusedBatchNorm(momentum=bn_decay, epsilon=bn_epsilon, scale=bn_scale, name="BatchNorm")
            if use_bn
            else None
        )

    def build(self, input_shape):
        shape = list(input_shape)
        if self.stride > 1:
            eff = self.kernel_size + (self.kernel_size - 1) * (self.rate - 1) - 1
            shape = [shape[0]] + [None if s is None else s + eff for s in shape[1:3]] + [shape[3]]
        self.conv.build(tuple(shape))
        if self.bn is not None:
            out_channels = shape[3] if self.depthwise else self.filters
            self.bn.build((None, None, None, out_channels))

    def call(self, inputs, training=False):
        x = inputs
        if self.stride > 1:
            x = fixed_padding(x, self.kernel_size, self.rate)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.activation == "relu":
            x = tf.nn.relu(x)
        elif self.activation is not None:
            raise ValueError(f"unsupported activation {self.activation!r}")
        return x

    @property
    def kernel(self):
        """The conv kernel (weight decay applies to it when `regularize`)."""
        return self.conv.kernel

    def tf1_variable_map(self):
        out = {("depthwise_weights" if self.depthwise else "weights"): self.kernel}
        if self.bn is None:
            out["biases"] = self.conv.bias
        else:
            if self.bn_scale:
                out["BatchNorm/gamma"] = self.bn.gamma
            out["BatchNorm/beta"] = self.bn.beta
            out["BatchNorm/moving_mean"] = self.bn.moving_mean
            out["BatchNorm/moving_variance"] = self.bn.moving_variance
        return out

    def regularized_kernels(self):
        return [self.kernel] if self.regularize else []

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                filters=self.filters,
                kernel_size=self.kernel_size,
                stride=self.stride,
                rate=self.rate,
                depthwise=self.depthwise,
                use_bn=self.use_bn,
                bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon,
                bn_scale=self.bn_scale,
                activation=self.activation,
                regularize=self.regularize,
                kernel_stddev=self.kernel_stddev,
            )
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_ext")
class SplitSeparableConv(keras.layers.Layer):
    """DeepLab's split separable conv: depthwise conv + BN, then 1x1 conv + BN.

    `activation` applies after both batch norms (slim's arg scope), or after neither.
    TF1 scopes are `{scope}_depthwise` and `{scope}_pointwise`; the depthwise kernel is not
    weight-decayed, as in DeepLab (regularize_depthwise=False).
    """

    def __init__(
        self,
        filters,
        scope,
        kernel_size=3,
        stride=1,
        rate=1,
        bn_decay=0.9997,
        bn_epsilon=1e-3,
        activation=None,
        depthwise_stddev=None,
        pointwise_stddev=None,
        **kwargs,
    ):
        kwargs.setdefault("name", scope)
        super().__init__(**kwargs)
        self.filters = filters
        self.scope = scope
        self.kernel_size = kernel_size
        self.stride = stride
        self.rate = rate
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        self.activation = activation
        self.depthwise_stddev = depthwise_stddev
        self.pointwise_stddev = pointwise_stddev
        self.depthwise = ConvBN(
            kernel_size=kernel_size,
            stride=stride,
            rate=rate,
            depthwise=True,
            bn_decay=bn_decay,
            bn_epsilon=bn_epsilon,
            activation=activation,
            regularize=False,
            kernel_stddev=depthwise_stddev,
            name=scope + "_depthwise",
        )
        self.pointwise = ConvBN(
            filters,
            1,
            bn_decay=bn_decay,
            bn_epsilon=bn_epsilon,
            activation=activation,
            kernel_stddev=pointwise_stddev,
            name=scope + "_pointwise",
        )

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.pointwise.build((None, None, None, input_shape[-1]))

    def call(self, inputs, training=False):
        mid = self.depthwise(inputs, training=training)
        out = self.pointwise(mid, training=training)
        return out

    def tf1_variable_map(self):
        out = join_scope(self.scope + "_depthwise", self.depthwise.tf1_variable_map())
        out.update(join_scope(self.scope + "_pointwise", self.pointwise.tf1_variable_map()))
        return out

    def regularized_kernels(self):
        return self.depthwise.regularized_kernels() + self.pointwise.regularized_kernels()

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                filters=self.filters,
                scope=self.scope,
                kernel_size=self.kernel_size,
                stride=self.stride,
                rate=self.rate,
                bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon,
                activation=self.activation,
                depthwise_stddev=self.depthwise_stddev,
                pointwise_stddev=self.pointwise_stddev,
            )
        )
        return config
