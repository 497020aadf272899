"""DeepLabv3's atrous spatial pyramid pooling, as DeepLab's `model.extract_features` builds it.

Branches, in concat order: image pooling (global mean, 1x1 conv, bilinear broadcast back),
`aspp0` (1x1 conv), `aspp1..N` (3x3 atrous convs, split separable by default), then
`concat_projection` (1x1 conv) and dropout (keep 0.9 while training). Every conv has batch
norm (epsilon 1e-5) and ReLU. DeepLab pools over the training crop; since our inputs are
always the crop, the global mean over the feature map is the same window.
"""

import keras
import tensorflow as tf

from deeplab_ext.layers import ConvBN, SplitSeparableConv, join_scope
from deeplab_ext.resize import resize_bilinear

ASPP_BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="deeplab_ext")
class ASPP(keras.layers.Layer):
    """ASPP head; `call(features, training, dropout)` returns the projected features."""

    def __init__(
        self,
        atrous_rates=(6, 12, 18),
        depth=256,
        use_separable_conv=True,
        add_image_level_feature=True,
        dropout_keep_prob=0.9,
        bn_decay=0.9997,
        **kwargs,
    ):
        kwargs.setdefault("name", "aspp")
        super().__init__(**kwargs)
        self.atrous_rates = tuple(int(r) for r in atrous_rates or ())
        self.depth = depth
        self.use_separable_conv = use_separable_conv
        self.add_image_level_feature = add_image_level_feature
        self.dropout_keep_prob = dropout_keep_prob
        self.bn_decay = bn_decay
        bn = dict(bn_decay=bn_decay, bn_epsilon=ASPP_BN_EPSILON, activation="relu")
        self.image_pooling = (
            ConvBN(depth, 1, name="image_pooling", **bn) if add_image_level_feature else None
        )
        self.branches = [ConvBN(depth, 1, name="aspp0", **bn)]
        for i, rate in enumerate(self.atrous_rates, 1):
            if use_separable_conv:
                self.branches.append(
                    SplitSeparableConv(
                        depth,
                        f"aspp{i}",
                        rate=rate,
                        depthwise_stddev=0.33,
                        pointwise_stddev=0.06,
                        **bn,
                    )
                )
            else:
                self.branches.append(ConvBN(depth, 3, rate=rate, name=f"aspp{i}", **bn))
        self.concat_projection = ConvBN(depth, 1, name="concat_projection", **bn)
        self.dropout = keras.layers.Dropout(1.0 - dropout_keep_prob)

    def build(self, input_shape):
        if self.image_pooling is not None:
            self.image_pooling.build(input_shape)
        for branch in self.branches:
            branch.build(input_shape)
        n = len(self.branches) + (1 if self.image_pooling is not None else 0)
        self.concat_projection.build((None, None, None, n * self.depth))

    def call(self, features, training=False, dropout=False):
        outs = []
        if self.image_pooling is not None:
            pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
            pooled = self.image_pooling(pooled, training=training)
            outs.append(resize_bilinear(pooled, tf.shape(features)[1:3]))
        outs += [branch(features, training=training) for branch in self.branches]
        x = self.concat_projection(tf.concat(outs, axis=3), training=training)
        return self.dropout(x, training=dropout)

    def _named_parts(self):
        parts = [self.image_pooling] if self.image_pooling is not None else []
        return parts + self.branches + [self.concat_projection]

    def tf1_variable_map(self):
        out = {}
        for part in self._named_parts():
            mapping = part.tf1_variable_map()
            out.update(
                mapping if isinstance(part, SplitSeparableConv) else join_scope(part.name, mapping)
            )
        return out

    def regularized_kernels(self):
        return [k for part in self._named_parts() for k in part.regularized_kernels()]

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                atrous_rates=self.atrous_rates,
                depth=self.depth,
                use_separable_conv=self.use_separable_conv,
                add_image_level_feature=self.add_image_level_feature,
                dropout_keep_prob=self.dropout_keep_prob,
                bn_decay=self.bn_decay,
            )
        )
        return config
