"""DeepLab's modified Xception (41, 65, 71) as Keras layers, with DeepLab's variable names.

The layout follows DeepLab's `core/xception.py`: a root of two 3x3 convs, then blocks of
Xception modules (three split separable convs plus a conv, identity or no shortcut).
When the requested output stride is reached, later strides become atrous rates, exactly as
DeepLab's `stack_blocks_dense` does. In all blocks but the last, ReLU is applied to each
separable conv's input and the convs themselves have none; the last block
(`activation_fn_in_separable_conv`) puts ReLU after each batch norm instead.
Registers 'xception_41', 'xception_65' and 'xception_71' as backbones.
"""

import keras
import tensorflow as tf

from deeplab_ext.backbone import Backbone, register_backbone, reject_options
from deeplab_ext.layers import ConvBN, SplitSeparableConv, join_scope, scaled_depth

XCEPTION_BN_DECAY = 0.9997

# (scope, depth_list, skip_connection, activation_in_separable_conv, num_units, stride)
_ENTRY_65 = [
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 1, 2),
]
_ENTRY_71 = [
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 1),
    ("entry_flow/block3", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block4", (728, 728, 728), "conv", False, 1, 1),
    ("entry_flow/block5", (728, 728, 728), "conv", False, 1, 2),
]
_EXIT = [
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1, 1),
]
_MIDDLE_UNITS = {"xception_41": 8, "xception_65": 16, "xception_71": 16}

# Low-level features DeepLab's decoder reads, by decoder output stride (feature_extractor.py).
DECODER_END_POINTS = {
    "xception_41": {
        4: "entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
        8: "entry_flow/block3/unit_1/xception_module/separable_conv2_pointwise",
    },
    "xception_65": {
        4: "entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
        8: "entry_flow/block3/unit_1/xception_module/separable_conv2_pointwise",
    },
    "xception_71": {
        4: "entry_flow/block3/unit_1/xception_module/separable_conv2_pointwise",
        8: "entry_flow/block5/unit_1/xception_module/separable_conv2_pointwise",
    },
}
# Grad-CAM target and hypercolumn blocks (the release's `net_to_stride_to_endpoints_name`).
CAM_END_POINT = "exit_flow/block2"
HYPERCOLUMN_END_POINTS = ("exit_flow/block2", "exit_flow/block1")


def xception_blocks(variant, middle_flow_units=None):
    """The block table of an Xception variant; `middle_flow_units` overrides the count."""
    if variant not in _MIDDLE_UNITS:
        raise ValueError(
            f"unknown Xception variant {variant!r}; use one of {sorted(_MIDDLE_UNITS)}"
        )
    entry = _ENTRY_71 if variant == "xception_71" else _ENTRY_65
    units = _MIDDLE_UNITS[variant] if middle_flow_units is None else middle_flow_units
    middle = [("middle_flow/block1", (728, 728, 728), "sum", False, units, 1)]
    return entry + middle + _EXIT


@keras.saving.register_keras_serializable(package="deeplab_ext")
class XceptionModule(keras.layers.Layer):
    """One Xception unit: three separable convs (stride on the last) plus the shortcut."""

    def __init__(
        self,
        depth_list,
        skip_connection,
        activation_in_separable_conv,
        stride=1,
        rate=1,
        unit_rates=(1, 1, 1),
        bn_decay=0.9997,
        bn_epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if skip_connection not in ("conv", "sum", "none"):
            raise ValueError(f"unsupported skip connection {skip_connection!r}")
        self.depth_list = tuple(depth_list)
        self.skip_connection = skip_connection
        self.activation_in_separable_conv = activation_in_separable_conv
        self.stride = stride
        self.rate = rate
        self.unit_rates = tuple(unit_rates)
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        act = "relu" if activation_in_separable_conv else None
        self.separable = [
            SplitSeparableConv(
                depth,
                f"separable_conv{i + 1}",
                stride=stride if i == 2 else 1,
                rate=rate * self.unit_rates[i],
                bn_decay=bn_decay,
                bn_epsilon=bn_epsilon,
                activation=act,
                depthwise_stddev=0.09,
                pointwise_stddev=0.09,
            )
            for i, depth in enumerate(self.depth_list)
        ]
        self.shortcut = (
            ConvBN(
                self.depth_list[-1],
                1,
                stride=stride,
                bn_decay=bn_decay,
                bn_epsilon=bn_epsilon,
                kernel_stddev=0.09,
                name="shortcut",
            )
            if skip_connection == "conv"
            else None
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv, depth in zip(self.separable, self.depth_list):
            conv.build((None, None, None, channels))
            channels = depth
        if self.shortcut is not None:
            self.shortcut.build(input_shape)

    def call(self, inputs, training=False):
        """Returns (output, {'separable_convN_pointwise': tensor}) for end points."""
        residual = inputs
        taps = {}
        for conv in self.separable:
            if not self.activation_in_separable_conv:
                residual = tf.nn.relu(residual)
            residual = conv(residual, training=training)
            taps[conv.scope + "_pointwise"] = residual
        if self.skip_connection == "conv":
            out = residual + self.shortcut(inputs, training=training)
        elif self.skip_connection == "sum":
            out = residual + inputs
        else:
            out = residual
        return out, taps

    def tf1_variable_map(self):
        out = {}
        for conv in self.separable:
            out.update(conv.tf1_variable_map())
        if self.shortcut is not None:
            out.update(join_scope("shortcut", self.shortcut.tf1_variable_map()))
        return out

    def regularized_kernels(self):
        kernels = [k for conv in self.separable for k in conv.regularized_kernels()]
        return kernels + (self.shortcut.regularized_kernels() if self.shortcut else [])

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                depth_list=self.depth_list,
                skip_connection=self.skip_connection,
                activation_in_separable_conv=self.activation_in_separable_conv,
                stride=self.stride,
                rate=self.rate,
                unit_rates=self.unit_rates,
                bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon,
            )
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_ext")
class Xception(Backbone):
    """The Xception backbone; `call` maps preprocessed images ([-1, 1], see `preprocess`)
    to a dict of named end points.

    End point names are DeepLab's without the `xception_65/` prefix: every block
    (`entry_flow/block1` ... `exit_flow/block2`) and every separable conv's pointwise
    output inside a unit (`.../unit_1/xception_module/separable_conv2_pointwise`).
    """

    def __init__(
        self,
        variant="xception_65",
        output_stride=16,
        multi_grid=None,
        width_multiplier=1.0,
        middle_flow_units=None,
        bn_decay=XCEPTION_BN_DECAY,
        bn_epsilon=1e-3,
        **kwargs,
    ):
        kwargs.setdefault("name", variant)
        super().__init__(**kwargs)
        self.variant = variant
        self.output_stride = output_stride
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.width_multiplier = width_multiplier
        self.middle_flow_units = middle_flow_units
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        if output_stride is not None and output_stride % 2:
            raise ValueError(f"output_stride must be even, got {output_stride}")
        bn = dict(bn_decay=bn_decay, bn_epsilon=bn_epsilon, kernel_stddev=0.09)
        w = lambda d: scaled_depth(d, width_multiplier)  # noqa: E731
        self.conv1_1 = ConvBN(w(32), 3, stride=2, activation="relu", name="conv1_1", **bn)
        self.conv1_2 = ConvBN(w(64), 3, stride=1, activation="relu", name="conv1_2", **bn)
        # DeepLab halves the target because the root already has stride 2.
        target = None if output_stride is None else output_stride // 2
        current, rate = 1, 1
        root_stride = 2
        self.units = []  # [(block scope, unit scope, XceptionModule)]
        for scope, depths, skip, act, num_units, stride in xception_blocks(
            variant, middle_flow_units
        ):
            for u in range(num_units):
                if target is not None and current > target:
                    raise ValueError(f"output_stride {output_stride} cannot be reached")
                unit_rates = (
                    (self.multi_grid or (1, 1, 1)) if scope == "exit_flow/block2" else (1, 1, 1)
                )
                in_stride = root_stride * current
                if target is not None and current == target:
                    unit_stride, unit_rate = 1, rate
                    rate *= stride
                else:
                    unit_stride, unit_rate = stride, 1
                    current *= stride
                module = XceptionModule(
                    [w(d) for d in depths],
                    skip,
                    act,
                    stride=unit_stride,
                    rate=unit_rate,
                    unit_rates=unit_rates,
                    bn_decay=bn_decay,
                    bn_epsilon=bn_epsilon,
                    name=f"{scope.replace('/', '_')}_unit_{u + 1}",
                )
                self.units.append((scope, f"unit_{u + 1}", module))
                # The stride sits in the unit's last separable conv.
                for i, depth in enumerate(module.depth_list):
                    self.declare_end_point(
                        f"{scope}/unit_{u + 1}/xception_module/separable_conv{i + 1}_pointwise",
                        depth,
                        in_stride * (unit_stride if i == 2 else 1),
                    )
                self.declare_end_point(scope, module.depth_list[-1], root_stride * current)
        if target is not None and current != target:
            raise ValueError(f"output_stride {output_stride} cannot be reached")

    def build(self, input_shape):
        self.conv1_1.build(input_shape)
        self.conv1_2.build((None, None, None, self.conv1_1.filters))
        channels = self.conv1_2.filters
        for _, _, module in self.units:
            module.build((None, None, None, channels))
            channels = module.depth_list[-1]

    def preprocess(self, images):
        """[0, 255] images -> DeepLab's Xception input in [-1, 1]."""
        return tf.cast(images, self.compute_dtype) * (2.0 / 255.0) - 1.0

    def call(self, images, training=False):
        x = self.conv1_1(images, training=training)
        x = self.conv1_2(x, training=training)
        end_points = {}
        for scope, unit, module in self.units:
            x, taps = module(x, training=training)
            for tap_name, tensor in taps.items():
                end_points[f"{scope}/{unit}/xception_module/{tap_name}"] = tensor
            end_points[scope] = x
        return end_points

    def tf1_variable_map(self):
        out = join_scope("entry_flow/conv1_1", self.conv1_1.tf1_variable_map())
        out.update(join_scope("entry_flow/conv1_2", self.conv1_2.tf1_variable_map()))
        for scope, unit, module in self.units:
            out.update(join_scope(f"{scope}/{unit}/xception_module", module.tf1_variable_map()))
        return join_scope(self.variant, out)

    def regularized_kernels(self):
        kernels = self.conv1_1.regularized_kernels() + self.conv1_2.regularized_kernels()
        return kernels + [k for _, _, m in self.units for k in m.regularized_kernels()]

    # The backbone contract (deeplab_ext.backbone).
    feature_end_point = "exit_flow/block2"
    cam_end_point = CAM_END_POINT
    hypercolumn_end_points = HYPERCOLUMN_END_POINTS
    classifier_keep_prob = 0.5  # dropout before PseudoSeg's classification logits

    @property
    def scope(self):
        return self.variant

    def decoder_end_point(self, decoder_output_stride):
        try:
            return DECODER_END_POINTS[self.variant][decoder_output_stride]
        except KeyError:
            raise ValueError(
                f"{self.variant} has no decoder end point at stride "
                f"{decoder_output_stride}; use 4 or 8"
            ) from None

    def get_config(self):
        config = super().get_config()
        config.update(
            dict(
                variant=self.variant,
                output_stride=self.output_stride,
                multi_grid=self.multi_grid,
                width_multiplier=self.width_multiplier,
                middle_flow_units=self.middle_flow_units,
                bn_decay=self.bn_decay,
                bn_epsilon=self.bn_epsilon,
            )
        )
        return config


@register_backbone(*sorted(_MIDDLE_UNITS))
def build_xception(
    name,
    output_stride=16,
    multi_grid=None,
    width_multiplier=1.0,
    middle_flow_units=None,
    bn_decay=None,
    **unsupported,
):
    """The registry's factory of the Xception variants (bn_decay None: DeepLab's 0.9997)."""
    reject_options(name, unsupported)
    return Xception(
        name,
        output_stride=output_stride,
        multi_grid=multi_grid,
        width_multiplier=width_multiplier,
        middle_flow_units=middle_flow_units,
        bn_decay=bn_decay or XCEPTION_BN_DECAY,
    )
