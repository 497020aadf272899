"""TEMP contract stand-in (BACKBONE_CONTRACT.md): the Backbone base and the registry.

The real module is written by the `backbone` helper; this copy exists only so that the
keras-hub adapter runs before it lands, and is dropped at merge.
"""

import keras

_FACTORIES = {}
STANDARD_OPTIONS = (
    "output_stride",
    "multi_grid",
    "width_multiplier",
    "middle_flow_units",
    "bn_decay",
)


class Backbone(keras.layers.Layer):
    """Abstract base of the encoders DeepLabV3Plus runs (see BACKBONE_CONTRACT.md)."""

    scope = None
    feature_end_point = None
    cam_end_point = None
    hypercolumn_end_points = ()
    classifier_keep_prob = 1.0

    def preprocess(self, images):
        raise NotImplementedError

    def end_point_channels(self, name):
        raise NotImplementedError

    def end_point_stride(self, name):
        raise NotImplementedError

    def decoder_end_point(self, decoder_output_stride):
        raise NotImplementedError

    def tf1_variable_map(self):
        raise NotImplementedError

    def regularized_kernels(self):
        raise NotImplementedError


def register_backbone(*names):
    """Decorator: registers `factory(name, **options) -> Backbone` under `names`."""

    def register(factory):
        for name in names:
            _FACTORIES[name] = factory
        return factory

    return register


def registered_backbones():
    """Sorted registered names."""
    return tuple(sorted(_FACTORIES))


def build_backbone(name, **options):
    """The backbone registered under `name`, built with `options`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {registered_backbones()}")
    return _FACTORIES[name](name, **options)
