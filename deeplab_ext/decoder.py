"""DeepLabv3+'s decoder, as DeepLab's `refine_by_decoder` builds it (scope `decoder`).

The low-level feature gets a 48-channel 1x1 projection (`feature_projection0`); it and the
ASPP output are resized bilinearly (align_corners) to the low-level feature's size,
concatenated, and refined by two 3x3 convs (`decoder_conv0`, `decoder_conv1`; split
separable by default). Batch norm epsilon 1e-5, ReLU everywhere.
"""

import keras
import tensorflow as tf

from deeplab_ext.aspp import ASPP_BN_EPSILON
from deeplab_ext.layers import ConvBN, SplitSeparableConv, join_scope
from deeplab_ext.resize import resize_bilinear


@keras.saving.register_keras_serializable(package="deeplab_ext")
class Decoder(keras.layers.Layer):
    """`call(features, low_level, training)` returns refined features at the low-level size."""

    def __init__(
        self, depth=256, projection_depth=48, use_separable_conv=True, bn_decay=0.9997, **kwargs
    ):
        kwargs.setdefault("name", "decoder")
        super().__init__(**kwargs)
        self.depth = depth
        self.projection_depth = projection_depth
        self.use_separable_conv = use_separable_conv
        self.bn_decay = bn_decay
        bn = dict(bn_decay=bn_decay, bn_epsilon=ASPP_BN_EPSILON, activation="relu")
        self.projection = ConvBN(projection_depth, 1, name="feature_projection0", **bn)
        if use_separable_conv:
            self.convs = [
                SplitSeparableConv(
                    depth, f"decoder_conv{i}", depthwise_stddev=0.33, pointwise_stddev=0.06, **bn
                )
                for i in range(2)
            ]
        else:
            self.convs = [ConvBN(depth, 3, name=f"decoder_conv{i}", **bn) for i in range(2)]

    def build(self, input_shape):
        features_shape, low_level_shape = input_shape
        self.projection.build(low_level_shape)
        channels = features_shape[-1] + self.projection_depth
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = self.depth

    def call(self, inputs, training=False):
        features, low_level = inputs
        size = tf.shape(low_level)[1:3]
        projected = self.projection(low_level, training=training)
        x = tf.concat([resize_bilinear(features, size), resize_bilinear(projected, size)], axis=3)
        for conv in self.convs:
            x = conv(x, training=training)
        return x

    def tf1_variable_map(self):
        out = join_scope("feature_projection0", self.projection.tf1_variable_map())
        for conv in self.convs:
            mapping = conv.tf1_variable_map()
            out.update(
                mapping if isinstance(conv, SplitSeparableConv) else join_scope(conv.name, mapping)
            )
        return join_scope("decoder", out)

    def regularized_kernels(self):
        return self.projection.regularized_kernels() + [
            k for conv in self.convs for k in conv.regularized_kernels()
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                depth=self.depth,
                projection_depth=self.projection_depth,
                use_separable_conv=self.use_separable_conv,
                bn_decay=self.bn_decay,
            )
        )
        return config
