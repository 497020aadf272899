"""keras-hub encoders (ResNet, MiT, DINOv2, any `FeaturePyramidBackbone`) as DeepLab backbones.

Registered as backbone `keras_hub` (the contract of deeplab_ext/backbone.py). The encoder
comes from a keras-hub preset (`preset`: a handle such as
'kaggle://keras/mit/keras/mit_b2_ade20k_512/4', 'hf://keras/...', a built-in preset name,
or a local directory written by `save_to_preset`) or from an architecture
(`architecture`: {'class_name': 'MiTBackbone', **constructor arguments}, random start).
keras-hub is imported only when such a backbone is built, so the core install never needs
it (`pip install -e ".[hub]"`).

Geometry. keras-hub's MiT and DINOv2 graphs have a fixed input size (MiT reshapes to a
static grid; DINOv2 adds position embeddings interpolated to one size), so every encoder is
built for one square size S: `image_size` (the largest crop it is fed, training and
evaluation) rounded up to a multiple of the encoder's total stride (32; the patch size for
a ViT). Inputs are padded bottom/right with zeros (the normalised mean colour) to S and each
level is cropped back to ceil(H / stride) rows and columns, DeepLab's feature size for its
4k + 1 crops (513 -> 129 / 65 / 33 / 17 at strides 4 / 8 / 16 / 32). DINOv2's position
embeddings are interpolated to S by keras-hub when it loads the preset.

End points are the encoder's `pyramid_outputs` keys (MiT 'P1'..'P4', ResNet 'P2'..'P5',
DINOv2 'stem', 'stage1'..'stageN'); a ViT's token sequences [B, T, C] become grids
[B, S/p, S/p, C] without the class and register tokens (the first T - (S/p)^2 tokens).
Level roles (each overridable by an option):
  - ASPP, the classification head and Grad-CAM: the deepest level (largest stride; for a
    ViT, whose levels all have the patch stride, the last block);
  - the SGC hypercolumn: the last two levels (last first, as DeepLab's last two blocks);
  - the decoder's low-level feature: the level at `decoder_output_stride`. A ViT has no
    level finer than its patch stride, so its decoder reads an early block (default: the
    block at a quarter of the depth) at the patch stride: DeepLabv3+'s refinement with an
    early, more local feature, at output stride 14 instead of 4.
The encoder runs at its natural stride: `output_stride` must be that stride (32 for MiT
and ResNet, the patch size for DINOv2) or None; keras-hub encoders have no atrous mode.
The preset or architecture alone sizes the encoder: `width_multiplier` and
`middle_flow_units` (which size DeepLab's own backbones) must stay at 1.0 / None.

Input normalisation: the preset's image converter (`image_converter.json`: x * scale +
offset on [0, 255] pixels); a preset without one, or an architecture, uses ImageNet's mean
and standard deviation (what keras-hub's ResNet, MiT and DINOv2 converters apply).
Weight decay (`regularized_kernels`) covers the encoder's conv and dense kernels, not its
depthwise kernels (as DeepLab), norms, biases, tokens or position embeddings. No official
TF1 checkpoint holds these encoders; `tf1_variable_map` names every encoder weight by its
position, so this project's checkpoints (which store the model by that map) include them.
"""

import math

import keras
import tensorflow as tf

from deeplab_ext.backbone import (
    Backbone,
    BackboneError,
    register_backbone,
    reject_middle_flow_units,
    reject_options,
)
from deeplab_ext.errors import MissingPackageError

HUB_BACKBONE = "keras_hub"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HIERARCHICAL_STRIDE = 32  # the coarsest level of keras-hub's CNN / MiT pyramids
_OPTIONS = (
    "preset",
    "architecture",
    "image_size",
    "load_weights",
    "feature_level",
    "hypercolumn_levels",
    "decoder_level",
    "input_multiple",
)


def import_keras_hub():
    """keras_hub, or a MissingPackageError (one `error:` line) saying how to install it."""
    try:
        import keras_hub
    except ImportError as e:
        raise MissingPackageError(
            f"backbone {HUB_BACKBONE!r} needs the package 'keras-hub', which is not "
            f'installed ({e}). Fix: pip install -e ".[hub]" (or pip install keras-hub==0.32.0)'
        ) from None
    return keras_hub


@register_backbone(HUB_BACKBONE, requires=import_keras_hub)
def build_hub_backbone(
    name,
    output_stride=None,
    multi_grid=None,
    width_multiplier=None,
    middle_flow_units=None,
    bn_decay=None,
    **options,
):
    """Factory of the `keras_hub` backbone: the contract's options plus the adapter's own
    (`_OPTIONS`). A preset or `architecture` sizes the encoder, so `width_multiplier`
    (other than None or 1.0) and `middle_flow_units` (other than None), which size
    DeepLab's own backbones, are errors, as are a multi-grid, an output stride other than
    the encoder's and an unknown option."""
    reject_options(name, {key: options[key] for key in options if key not in _OPTIONS})
    reject_options(
        name,
        {} if width_multiplier in (None, 1.0) else {"width_multiplier": width_multiplier},
        fix="size the encoder with backbone_options['architecture'] or a preset, and leave "
        "width_multiplier at 1.0",
    )
    reject_middle_flow_units(name, middle_flow_units)
    reject_options(
        name,
        {"multi_grid": multi_grid} if multi_grid else {},
        fix="keras-hub encoders have no atrous mode; leave multi_grid None",
    )
    return HubBackbone(output_stride=output_stride, bn_decay=bn_decay, **options)


def _encoder_config(keras_hub, preset, architecture):
    """(class, constructor config) of the encoder a preset or an architecture describes."""
    if (preset is None) == (architecture is None):
        raise BackboneError(
            f"backbone {HUB_BACKBONE!r} needs exactly one of `preset` (a keras-hub handle "
            "or preset directory) and `architecture` ({'class_name': ..., **arguments})"
        )
    if preset is not None:
        from keras_hub.src.utils.preset_utils import load_json

        saved = load_json(preset)
        class_name, config = saved["class_name"], dict(saved["config"])
    else:
        architecture = dict(architecture)
        class_name = architecture.pop("class_name", None)
        config = architecture
    cls = getattr(keras_hub.models, str(class_name), None)
    if cls is None or not issubclass(cls, keras_hub.models.FeaturePyramidBackbone):
        raise BackboneError(
            f"{class_name!r} is not a keras-hub FeaturePyramidBackbone (e.g. 'MiTBackbone', "
            "'DINOV2Backbone', 'ResNetBackbone')"
        )
    return cls, config


def _preset_normalization(preset):
    """(scale, offset) per channel for [0, 255] pixels: the preset's image converter's,
    else ImageNet's mean / standard deviation."""
    scale = [1.0 / (255.0 * s) for s in _IMAGENET_STD]
    offset = [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)]
    if preset is None:
        return scale, offset
    from keras_hub.src.utils.preset_utils import (
        IMAGE_CONVERTER_CONFIG_FILE,
        check_file_exists,
        load_json,
    )

    if not check_file_exists(preset, IMAGE_CONVERTER_CONFIG_FILE):
        return scale, offset
    config = load_json(preset, IMAGE_CONVERTER_CONFIG_FILE)["config"]

    def per_channel(value, default):
        if value is None:
            return default
        values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        return values * 3 if len(values) == 1 else values

    return per_channel(config.get("scale"), [1.0] * 3), per_channel(config.get("offset"), [0.0] * 3)


@keras.saving.register_keras_serializable(package="deeplab_ext")
class HubBackbone(Backbone):
    """A keras-hub feature-pyramid encoder behind the backbone contract (module docstring).

    Args:
      preset / architecture: where the encoder comes from (exactly one).
      image_size: the largest input side it will see; default: the preset's image shape.
      load_weights: load the preset's weights (False: its architecture, random start).
      output_stride: None or the encoder's natural stride (checked).
      bn_decay: moving-average decay of the encoder's batch norms (None: the preset's).
      feature_level, hypercolumn_levels, decoder_level: override the level roles.
      input_multiple: the padded size's multiple (default: the patch size or 32).
    """

    def __init__(
        self,
        preset=None,
        architecture=None,
        image_size=None,
        load_weights=True,
        output_stride=None,
        bn_decay=None,
        feature_level=None,
        hypercolumn_levels=None,
        decoder_level=None,
        input_multiple=None,
        **kwargs,
    ):
        kwargs.setdefault("name", HUB_BACKBONE)
        super().__init__(**kwargs)
        keras_hub = import_keras_hub()
        self.preset = preset
        self.architecture = dict(architecture) if architecture is not None else None
        self.load_weights = bool(load_weights)
        self.output_stride = output_stride
        self.bn_decay = bn_decay
        cls, config = _encoder_config(keras_hub, preset, self.architecture)
        self.encoder_class = cls.__name__
        patch = config.get("patch_size")
        self.is_vit = patch is not None
        self.input_multiple = int(input_multiple or (patch or _HIERARCHICAL_STRIDE))
        if image_size is None:
            shape = config.get("image_shape") or (None,)
            image_size = shape[0]
        if image_size is None:
            raise BackboneError(
                f"backbone {HUB_BACKBONE!r} ({self.encoder_class}) needs `image_size`: the "
                "largest crop it is fed (training and evaluation), e.g. 513"
            )
        self.image_size = int(image_size)
        self.padded_size = self.input_multiple * math.ceil(self.image_size / self.input_multiple)
        overrides = {"image_shape": (self.padded_size, self.padded_size, 3)}
        if "apply_layernorm" in config:
            # DINOv2: every block's tokens through the final layer norm, as its features
            # are used for dense prediction (DINOv2 paper, linear segmentation probes).
            overrides["apply_layernorm"] = True
        if preset is not None:
            encoder = cls.from_preset(preset, load_weights=self.load_weights, **overrides)
        else:
            encoder = cls(**{**config, **overrides})
        if bn_decay is not None:
            for layer in encoder._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = float(bn_decay)
        self.scale, self.offset = _preset_normalization(preset)
        # Only this view of the encoder is tracked (the encoder's own object is not kept),
        # so each variable appears once in the model's weights and checkpoints.
        self.pyramid = keras.Model(
            encoder.input, dict(encoder.pyramid_outputs), name=f"{encoder.name}_pyramid"
        )
        self._input_key = next(iter(encoder.input)) if isinstance(encoder.input, dict) else None
        self.levels = self._level_geometry(encoder.pyramid_outputs)
        names = list(self.levels)
        deepest = max(self.levels[n][0] for n in names)
        self.feature_level = feature_level or [n for n in names if self.levels[n][0] == deepest][-1]
        self.hypercolumn_levels = tuple(hypercolumn_levels or (names[-1], names[-2]))
        self.vit_decoder_level = decoder_level or (
            f"stage{max(1, (len(names) - 1) // 4)}" if self.is_vit else None
        )
        for level in (self.feature_end_point, *self.hypercolumn_end_points):
            self._check_level(level)
        natural = self.levels[self.feature_end_point][0]
        if output_stride is not None and int(output_stride) != natural:
            raise BackboneError(
                f"backbone {HUB_BACKBONE!r} ({self.encoder_class}) runs at its natural output "
                f"stride {natural} (no atrous mode): set ModelSettings.output_stride = {natural}"
                f" (got {output_stride})"
            )

    def _level_geometry(self, pyramid_outputs):
        """{level: (stride, channels, prefix tokens or None)} of the encoder's levels."""
        size = self.padded_size
        out = {}
        for name, tensor in pyramid_outputs.items():
            shape = tensor.shape
            if len(shape) == 4:
                stride = size // shape[1]
                if shape[1] * stride != size:
                    raise ValueError(
                        f"{self.encoder_class} level {name!r} is {shape[1]} wide at input "
                        f"{size}: set backbone option `input_multiple` to its total stride"
                    )
                out[name] = (stride, int(shape[-1]), None)
            elif len(shape) == 3 and self.is_vit:
                grid = size // self.input_multiple
                out[name] = (self.input_multiple, int(shape[-1]), int(shape[1]) - grid * grid)
            else:
                raise ValueError(f"{self.encoder_class} level {name!r} has shape {shape}")
        return out

    def _check_level(self, name):
        if name not in self.levels:
            raise ValueError(
                f"{self.encoder_class} has no level {name!r}; its levels are {list(self.levels)}"
            )

    # ---------------------------------------------------------------- the contract
    @property
    def scope(self):
        return HUB_BACKBONE

    classifier_keep_prob = 0.5  # PseudoSeg's classification head dropout (as Xception's)

    @property
    def feature_end_point(self):
        return self.feature_level

    @property
    def cam_end_point(self):
        return self.feature_level

    @property
    def hypercolumn_end_points(self):
        return self.hypercolumn_levels

    def preprocess(self, images):
        """[0, 255] images -> the preset's normalisation (x * scale + offset)."""
        x = tf.cast(images, tf.float32)
        return x * tf.constant(self.scale, tf.float32) + tf.constant(self.offset, tf.float32)

    def build(self, input_shape):
        self.built = True  # the encoder was built at construction, at the padded size

    def call(self, images, training=False):
        size = self.padded_size
        static = images.shape[1:3]
        if any(d is not None and d > size for d in static):
            raise ValueError(
                f"input {tuple(static)} is larger than the encoder's size {self.image_size}: "
                f"set ModelSettings.backbone_options['image_size'] >= {max(static)}"
            )
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        tf.debugging.assert_less_equal(  # sizes unknown until run (an exported model)
            tf.maximum(height, width),
            size,
            message=f"input larger than the encoder's image_size {self.image_size}: raise "
            "ModelSettings.backbone_options['image_size']",
        )
        x = tf.pad(images, [[0, 0], [0, size - height], [0, size - width], [0, 0]])
        x = tf.ensure_shape(x, [None, size, size, images.shape[-1]])
        outputs = self.pyramid(
            {self._input_key: x} if self._input_key else x, training=bool(training)
        )
        end_points = {}
        for name, (stride, channels, prefix) in self.levels.items():
            y = outputs[name]
            if prefix is not None:
                grid = size // stride
                y = tf.reshape(y[:, prefix:], [-1, grid, grid, channels])
            rows = (height + stride - 1) // stride
            cols = (width + stride - 1) // stride
            end_points[name] = y[:, :rows, :cols]
        return end_points

    def end_point_channels(self, name):
        self._check_level(name)
        return self.levels[name][1]

    def end_point_stride(self, name):
        self._check_level(name)
        return self.levels[name][0]

    def decoder_end_point(self, decoder_output_stride):
        if self.is_vit:
            self._check_level(self.vit_decoder_level)
            return self.vit_decoder_level
        matches = [n for n, (s, _, _) in self.levels.items() if s == decoder_output_stride]
        if not matches:
            strides = sorted({s for s, _, _ in self.levels.values()})
            raise ValueError(
                f"{self.encoder_class} has no level at decoder output stride "
                f"{decoder_output_stride}; its strides are {strides}"
            )
        return matches[0]

    def tf1_variable_map(self):
        """{name: variable} of every encoder weight, named `keras_hub/encoder/NNNN_name` by
        its position in the encoder (no official TF1 checkpoint has keras-hub encoders;
        these names put them in this project's checkpoints, wss.checkpointing, which hold
        the model's weights by this map). Keras paths are no key: layers the encoder
        leaves unnamed get per-process unique names."""
        out, seen = {}, set()
        for variable in self.pyramid.weights:
            if id(variable) not in seen:
                seen.add(id(variable))
                out[f"{HUB_BACKBONE}/encoder/{len(out):04d}_{variable.name}"] = variable
        return out

    def regularized_kernels(self):
        """Conv and dense kernels of the encoder (depthwise kernels left out, as DeepLab)."""
        kernel_layers = (
            keras.layers.Conv1D,
            keras.layers.Conv2D,
            keras.layers.Conv3D,
            keras.layers.Dense,
            keras.layers.EinsumDense,
        )
        seen, kernels = set(), []
        for layer in self.pyramid._flatten_layers(include_self=False):
            if isinstance(layer, kernel_layers) and id(layer.kernel) not in seen:
                seen.add(id(layer.kernel))
                kernels.append(layer.kernel)
        return kernels

    def get_config(self):
        config = super().get_config()
        config.update(
            preset=self.preset,
            architecture=self.architecture,
            image_size=self.image_size,
            load_weights=self.load_weights,
            output_stride=self.output_stride,
            bn_decay=self.bn_decay,
            feature_level=self.feature_level,
            hypercolumn_levels=self.hypercolumn_levels,
            decoder_level=self.vit_decoder_level,
            input_multiple=self.input_multiple,
        )
        return config
