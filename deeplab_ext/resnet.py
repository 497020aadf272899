"""DeepLab's ResNet v1 backbones (50 and 101; the 'beta' root or the plain 7x7 one).

The layout follows DeepLab's `core/resnet_v1_beta.py`: the beta root is three 3x3 convs
(64, 64, 128 channels, the first with stride 2) instead of one 7x7 conv, then a 3x3 max
pool with stride 2, then four blocks of bottleneck units whose stride sits in the LAST
unit of a block; block4 has one unit per multi-grid rate. Later strides become atrous
rates once the output stride is reached (`stack_blocks_dense`). Batch norm: decay 0.95,
epsilon 1e-5, as DeepLab's feature extractor sets it for ResNets. The beta variants take
inputs mapped to [-1, 1]; the plain ones subtract the ImageNet mean. Registers the four
variants as backbones.
"""

import keras
import tensorflow as tf

from deeplab_ext.backbone import (
    Backbone,
    register_backbone,
    reject_middle_flow_units,
    reject_options,
)
from deeplab_ext.layers import ConvBN, join_scope, scaled_depth

RESNET_BN_DECAY = 0.95
RESNET_BN_EPSILON = 1e-5
_UNITS = {"resnet_v1_50": (3, 4, 6), "resnet_v1_101": (3, 4, 23)}
_IMAGENET_MEAN = (123.68, 116.78, 103.94)
VARIANTS = ("resnet_v1_50_beta", "resnet_v1_101_beta", "resnet_v1_50", "resnet_v1_101")


@keras.saving.register_keras_serializable(package="deeplab_ext")
class Bottleneck(keras.layers.Layer):
    """ResNet v1 bottleneck: 1x1, 3x3 (strided, atrous), 1x1, plus the shortcut; ReLU after."""

    def __init__(
        self,
        depth,
        depth_bottleneck,
        in_depth,
        stride=1,
        rate=1,
        bn_decay=RESNET_BN_DECAY,
        bn_epsilon=RESNET_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth = depth
        self.depth_bottleneck = depth_bottleneck
        self.in_depth = in_depth
        self.stride = stride
        self.rate = rate
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_decay=bn_decay, bn_epsilon=bn_epsilon)
        self.shortcut = (
            ConvBN(depth, 1, stride=stride, name="shortcut", **bn) if depth != in_depth else None
        )
        self.conv1 = ConvBN(depth_bottleneck, 1, activation="relu", name="conv1", **bn)
        self.conv2 = ConvBN(
            depth_bottleneck, 3, stride=stride, rate=rate, activation="relu", name="conv2", **bn
        )
        self.conv3 = ConvBN(depth, 1, name="conv3", **bn)

    def build(self, input_shape):
        if self.shortcut is not None:
            self.shortcut.build(input_shape)
        self.conv1.build(input_shape)
        self.conv2.build((None, None, None, self.depth_bottleneck))
        self.conv3.build((None, None, None, self.depth_bottleneck))

    def call(self, inputs, training=False):
        """Returns (output, {'conv3': pre-activation residual}) for end points."""
        if self.shortcut is not None:
            shortcut = self.shortcut(inputs, training=training)
        else:  # DeepLab's `subsample`: a 1x1 max pool with stride = every stride-th pixel
            shortcut = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs
        residual = self.conv1(inputs, training=training)
        residual = self.conv2(residual, training=training)
        residual = self.conv3(residual, training=training)
        return tf.nn.relu(shortcut + residual), {"conv3": residual}

    def _parts(self):
        parts = [self.conv1, self.conv2, self.conv3]
        return parts + ([self.shortcut] if self.shortcut is not None else [])

    def tf1_variable_map(self):
        out = {}
        for part in self._parts():
            out.update(join_scope(part.name, part.tf1_variable_map()))
        return out

    def regularized_kernels(self):
        return [k for part in self._parts() for k in part.regularized_kernels()]

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                depth=self.depth,
                depth_bottleneck=self.depth_bottleneck,
                in_depth=self.in_depth,
                stride=self.stride,
                rate=self.rate,
                bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon,
            )
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_ext")
class ResNetV1(Backbone):
    """A DeepLab ResNet v1 backbone; `call` maps preprocessed images (see `preprocess`) to
    named end points (`block1` ... `block4` and each unit's `blockN/unit_M/bottleneck_v1/conv3`,
    the unit's residual before the shortcut is added)."""

    def __init__(
        self,
        variant="resnet_v1_101_beta",
        output_stride=16,
        multi_grid=None,
        width_multiplier=1.0,
        bn_decay=None,
        **kwargs,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"unknown ResNet variant {variant!r}; use one of {VARIANTS}")
        self.variant = variant
        kwargs.setdefault("name", self.scope)
        super().__init__(**kwargs)
        self.output_stride = output_stride
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.width_multiplier = width_multiplier
        self.bn_decay = bn_decay
        if output_stride is not None and output_stride % 4:
            raise ValueError(f"output_stride must be a multiple of 4, got {output_stride}")
        bn = dict(bn_decay=bn_decay or RESNET_BN_DECAY, bn_epsilon=RESNET_BN_EPSILON)
        w = lambda d: scaled_depth(d, width_multiplier)  # noqa: E731
        self.beta = variant.endswith("_beta")
        if self.beta:
            self.root = [
                ConvBN(w(64), 3, stride=2, activation="relu", name="conv1_1", **bn),
                ConvBN(w(64), 3, activation="relu", name="conv1_2", **bn),
                ConvBN(w(128), 3, activation="relu", name="conv1_3", **bn),
            ]
        else:
            self.root = [ConvBN(w(64), 7, stride=2, activation="relu", name="conv1", **bn)]
        self.pool = keras.layers.MaxPooling2D(3, 2, padding="same")
        # Block strides sit in each block's last unit; block4 has one unit per grid rate.
        units = [
            (f"block{b + 1}", base, n, 2)
            for b, (base, n) in enumerate(zip((64, 128, 256), _UNITS[self.scope]))
        ]
        grid = self.multi_grid or (1, 1, 1)
        target = None if output_stride is None else output_stride // 4
        current, rate = 1, 1
        root_stride = 4  # the root's strided conv and the max pool
        in_depth = self.root[-1].filters
        self.units = []  # [(block, unit scope, Bottleneck)]
        plan = [
            (block, base, 2 if u == n - 1 else 1, 1, u)
            for block, base, n, _ in units
            for u in range(n)
        ]
        plan += [("block4", 512, 1, r, u) for u, r in enumerate(grid)]
        for block, base, stride, unit_rate, u in plan:
            if target is not None and current > target:
                raise ValueError(f"output_stride {output_stride} cannot be reached")
            if target is not None and current == target:
                unit_stride, unit_atrous = 1, rate * unit_rate
                rate *= stride
            else:
                unit_stride, unit_atrous = stride, unit_rate
                current *= stride
            module = Bottleneck(
                w(base * 4),
                w(base),
                in_depth,
                stride=unit_stride,
                rate=unit_atrous,
                name=f"{block}_unit_{u + 1}",
                **bn,
            )
            self.units.append((block, f"unit_{u + 1}", module))
            in_depth = module.depth
            unit_end_point = f"{block}/unit_{u + 1}/bottleneck_v1/conv3"
            self.declare_end_point(unit_end_point, module.depth, root_stride * current)
            self.declare_end_point(block, module.depth, root_stride * current)
        if target is not None and current != target:
            raise ValueError(f"output_stride {output_stride} cannot be reached")

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv in self.root:
            conv.build((None, None, None, channels))
            channels = conv.filters
        for _, _, module in self.units:
            module.build((None, None, None, module.in_depth))

    @property
    def scope(self):
        """DeepLab's variable scope: the variant without '_beta'."""
        return self.variant.replace("_beta", "")

    def preprocess(self, images):
        """[0, 255] images -> [-1, 1] (beta variants) or minus the ImageNet mean (plain)."""
        x = tf.cast(images, self.compute_dtype)
        if self.beta:
            return x * (2.0 / 255.0) - 1.0
        return x - tf.constant(_IMAGENET_MEAN, dtype=x.dtype)

    def call(self, images, training=False):
        x = images
        for conv in self.root:
            x = conv(x, training=training)
        x = self.pool(x)
        end_points = {}
        for block, unit, module in self.units:
            x, taps = module(x, training=training)
            end_points[f"{block}/{unit}/bottleneck_v1/conv3"] = taps["conv3"]
            end_points[block] = x
        return end_points

    # The backbone contract (deeplab_ext.backbone).
    feature_end_point = "block4"
    cam_end_point = "block4"
    hypercolumn_end_points = ("block4", "block3")
    classifier_keep_prob = 1.0  # DeepLab's ResNet classifier has no dropout

    def decoder_end_point(self, decoder_output_stride):
        names = {4: "block1/unit_2/bottleneck_v1/conv3", 8: "block2/unit_3/bottleneck_v1/conv3"}
        if decoder_output_stride not in names:
            raise ValueError(
                f"{self.variant} has no decoder end point at stride "
                f"{decoder_output_stride}; use 4 or 8"
            )
        return names[decoder_output_stride]

    def tf1_variable_map(self):
        out = {}
        for conv in self.root:
            out.update(join_scope(conv.name, conv.tf1_variable_map()))
        for block, unit, module in self.units:
            out.update(join_scope(f"{block}/{unit}/bottleneck_v1", module.tf1_variable_map()))
        return join_scope(self.scope, out)

    def regularized_kernels(self):
        kernels = [k for conv in self.root for k in conv.regularized_kernels()]
        return kernels + [k for _, _, m in self.units for k in m.regularized_kernels()]

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                variant=self.variant,
                output_stride=self.output_stride,
                multi_grid=self.multi_grid,
                width_multiplier=self.width_multiplier,
                bn_decay=self.bn_decay,
            )
        )
        return config


@register_backbone(*VARIANTS)
def build_resnet(
    name,
    output_stride=16,
    multi_grid=None,
    width_multiplier=1.0,
    middle_flow_units=None,
    bn_decay=None,
    **unsupported,
):
    """The registry's factory of the ResNet variants (bn_decay None: DeepLab's 0.95).

    `middle_flow_units` (an Xception option DeepLabV3Plus always passes) must be None.
    """
    reject_options(name, unsupported)
    reject_middle_flow_units(name, middle_flow_units)
    return ResNetV1(
        name,
        output_stride=output_stride,
        multi_grid=multi_grid,
        width_multiplier=width_multiplier,
        bn_decay=bn_decay,
    )
