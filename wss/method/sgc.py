"""Self-attention Grad-CAM (SGC, eq. 3 and appendix A of the paper) as a Keras layer.

Query and key are 1x1 convs (no bias, `attention_dim` channels) of the hypercolumn: the
last two backbone blocks, resized bilinearly (align_corners) to the CAM size, concatenated
(last block first, as the release orders them) and cut from the gradient. Attention is
softmax(Q K^T / sqrt(d)) with -1e9 added where the query or the key pixel is invalid;
the value is the CAM, with a skip connection. A background channel 2 - max_c is put first,
and `pixel_normalization` (1x1 conv without bias + slim-default batch norm: no gamma,
decay 0.999, epsilon 1e-3) maps the C channels to logits. Variable names match the
release's (`hyper_column/key`, `hyper_column/query`, `pixel_normalization`).
"""

import math

import keras
import tensorflow as tf

from deeplab_ext.layers import ConvBN, join_scope
from deeplab_ext.resize import resize_bilinear, resize_nearest


def attention_valid_mask(valid, decoder_size, cam_size):
    """The release's path of the valid mask to the attention: nearest to the decoder size,
    then nearest to the CAM size."""
    mask = resize_nearest(tf.cast(valid, tf.float32), decoder_size)
    return resize_nearest(mask, cam_size)


@keras.saving.register_keras_serializable(package="wss")
class SelfAttentionGradCAM(keras.layers.Layer):
    """`call(hypercolumn, cam, valid=None, training=False)` -> SGC logits [B, h, w, C].

    `hypercolumn` is a list of feature maps (last block first); `cam` [B, h, w, C-1] the
    Grad-CAM (the value); `valid` [B, h, w, 1] at the CAM size or None; `training` is the
    batch-norm mode of `pixel_normalization` only.
    """

    def __init__(self, num_classes, attention_dim=128, **kwargs):
        kwargs.setdefault("name", "sgc")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.attention_dim = attention_dim
        self.key = keras.layers.Conv2D(attention_dim, 1, use_bias=False, name="key")
        self.query = keras.layers.Conv2D(attention_dim, 1, use_bias=False, name="query")
        self.pixel_normalization = ConvBN(
            num_classes,
            1,
            bn_decay=0.999,
            bn_epsilon=1e-3,
            bn_scale=False,
            regularize=False,
            name="pixel_normalization",
        )

    def build(self, hypercolumn_channels):
        """`hypercolumn_channels`: total channels of the concatenated hypercolumn."""
        shape = (None, None, None, int(hypercolumn_channels))
        self.key.build(shape)
        self.query.build(shape)
        self.pixel_normalization.build((None, None, None, self.num_classes))
        self.built = True

    def call(self, hypercolumn, cam, valid=None, training=False):
        size = tf.shape(cam)[1:3]
        batch, height, width = tf.shape(cam)[0], size[0], size[1]
        feats = tf.concat(
            [tf.cast(resize_bilinear(f, size), tf.float32) for f in hypercolumn], axis=3
        )
        feats = tf.stop_gradient(feats)
        value = tf.stop_gradient(tf.cast(cam, tf.float32))
        q = tf.reshape(tf.cast(self.query(feats), tf.float32), [batch, -1, self.attention_dim])
        k = tf.reshape(tf.cast(self.key(feats), tf.float32), [batch, -1, self.attention_dim])
        att = tf.matmul(q, k, transpose_b=True) / math.sqrt(self.attention_dim)
        if valid is not None:
            v = tf.reshape(tf.cast(valid, tf.float32), [batch, -1, 1])
            att += (1.0 - tf.matmul(v, v, transpose_b=True)) * -1e9
        att = tf.nn.softmax(att, axis=-1)
        score = tf.matmul(att, tf.reshape(value, [batch, height * width, -1]))
        score = tf.reshape(score, tf.shape(value)) + value
        background = 2.0 - tf.reduce_max(score, axis=3, keepdims=True)
        score = tf.concat([background, score], axis=3)
        return tf.cast(self.pixel_normalization(score, training=training), tf.float32)

    def tf1_variable_map(self):
        out = {
            "hyper_column/key/weights": self.key.kernel,
            "hyper_column/query/weights": self.query.kernel,
        }
        out.update(join_scope("pixel_normalization", self.pixel_normalization.tf1_variable_map()))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(dict(num_classes=self.num_classes, attention_dim=self.attention_dim))
        return config
