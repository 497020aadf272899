"""The backbone contract DeepLabV3Plus and PseudoSeg build on, and the name -> factory registry.

A backbone is a Keras layer that turns preprocessed images into a dict of named feature
maps ("end points", NHWC). DeepLabV3Plus feeds `feature_end_point` to ASPP and the
classification head and `decoder_end_point(stride)` to the decoder; PseudoSeg's Grad-CAM
differentiates `cam_end_point` and the SGC concatenates `hypercolumn_end_points`. Nothing
else about a backbone is read, so a new one is one module that subclasses `Backbone`,
registers a factory under its names with `register_backbone`, and is named in
BUILTIN_BACKBONE_MODULES (see docs/architecture.md, "How to add a backbone").

Every factory is called as `factory(name, **options)` with the options DeepLabV3Plus
always passes (BACKBONE_OPTIONS, None meaning "its default") plus whatever
`DeepLabV3Plus(backbone_options=...)` adds for that backbone. It rejects, with
`reject_options`, options it does not know and any of BACKBONE_OPTIONS it cannot honour set
to a value other than its default (ResNet's `middle_flow_units`, an Xception option;
keras_hub's `width_multiplier`), so a setting never silently has no effect. (`bn_decay`
also sets the heads' batch norms: a backbone without batch norm may leave it unused.)
"""

import importlib

import keras

from deeplab_ext.errors import DeepLabError

# Modules that register the project's backbones, imported on the first registry lookup
# (so `import deeplab_ext` stays light and the registry is never found half-filled).
BUILTIN_BACKBONE_MODULES = (
    "deeplab_ext.xception",
    "deeplab_ext.resnet",
    "deeplab_ext.hub_backbone",
)

# The keywords every factory receives (DeepLabV3Plus's own arguments, forwarded).
BACKBONE_OPTIONS = (
    "output_stride",
    "multi_grid",
    "width_multiplier",
    "middle_flow_units",
    "bn_decay",
)

_REGISTRY = {}  # backbone name -> factory(name, **options) -> Backbone
_REQUIREMENTS = {}  # backbone name -> check() that raises when an optional package is missing


class BackboneError(DeepLabError):
    """An unknown backbone name or an option the backbone does not support."""


def register_backbone(*names, requires=None):
    """Decorator: registers `factory(name, **options) -> Backbone` under each of `names`.

    requires: a check() that raises MissingPackageError when an optional package the
    backbone needs is not installed; check_backbone_requirements runs it before any work.
    """
    if not names:
        raise ValueError("register_backbone needs at least one name")

    def register(factory):
        for name in names:
            if _REGISTRY.get(name, factory) is not factory:
                raise ValueError(f"backbone {name!r} is already registered by {_REGISTRY[name]}")
            _REGISTRY[name] = factory
            if requires is not None:
                _REQUIREMENTS[name] = requires
        return factory

    return register


def _import_builtin_backbones():
    for module in BUILTIN_BACKBONE_MODULES:
        importlib.import_module(module)


def registered_backbones():
    """The registered backbone names, sorted."""
    _import_builtin_backbones()
    return tuple(sorted(_REGISTRY))


def check_backbone_requirements(name):
    """Raises MissingPackageError (with the install command) when backbone `name` needs an
    optional package that is not installed, so a program stops before it writes anything."""
    _import_builtin_backbones()
    if name in _REQUIREMENTS:
        _REQUIREMENTS[name]()


def build_backbone(name, **options):
    """The backbone registered as `name`, built by its factory with `options`."""
    _import_builtin_backbones()
    if name not in _REGISTRY:
        raise BackboneError(
            f"unknown backbone {name!r}; registered: {', '.join(registered_backbones())}"
        )
    return _REGISTRY[name](name, **options)


def reject_options(name, unsupported, fix=None):
    """Raises BackboneError naming the options (a dict: option -> value) backbone `name`
    does not support, their values and `fix` (what to do instead) when given."""
    if unsupported:
        values = ", ".join(f"{key}={unsupported[key]!r}" for key in sorted(unsupported))
        raise BackboneError(
            f"backbone {name!r} does not support the options {sorted(unsupported)} ({values})"
            + (f": {fix}" if fix else "")
        )


def reject_middle_flow_units(name, middle_flow_units):
    """Raises BackboneError if `middle_flow_units` (the unit count of Xception's middle
    flow) is set for backbone `name`, which has no middle flow."""
    reject_options(
        name,
        {} if middle_flow_units is None else {"middle_flow_units": middle_flow_units},
        fix="middle_flow_units is an Xception option; leave it None",
    )


class Backbone(keras.layers.Layer):
    """The abstract base of every backbone (see the module docstring for who reads what).

    Subclasses set the four class attributes below, implement `scope`, `preprocess`,
    `call`, `decoder_end_point`, `regularized_kernels` and `get_config`, and either call
    `declare_end_point` for each end point in `__init__` or override `end_point_channels`
    and `end_point_stride`. `tf1_variable_map` is {} unless TF1 checkpoints exist.
    """

    feature_end_point = None  # feeds ASPP and the classification head
    cam_end_point = None  # what Grad-CAM differentiates
    hypercolumn_end_points = ()  # concatenated into the SGC's hypercolumn (deepest first)
    classifier_keep_prob = 1.0  # default dropout keep probability of the classification head

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._declared_end_points = {}  # name -> (channels, stride)

    @property
    def scope(self):
        """TF1 variable scope of the backbone; the classification head is '{scope}/logits'."""
        raise NotImplementedError(f"{type(self).__name__} must define `scope`")

    def preprocess(self, images):
        """Images (float, [0, 255]) -> this backbone's input."""
        raise NotImplementedError(f"{type(self).__name__} must define `preprocess`")

    def call(self, images, training=False):
        """Preprocessed images -> {end point name: NHWC tensor}."""
        raise NotImplementedError(f"{type(self).__name__} must define `call`")

    def declare_end_point(self, name, channels, stride):
        """Records an end point's channel count and stride w.r.t. the input image."""
        self._declared_end_points[name] = (int(channels), int(stride))

    def _declared(self, name):
        if name not in self._declared_end_points:
            raise KeyError(f"no end point {name!r} in backbone {self.scope!r}")
        return self._declared_end_points[name]

    def end_point_channels(self, name):
        """Channels of end point `name`."""
        return self._declared(name)[0]

    def end_point_stride(self, name):
        """Spatial stride of end point `name` w.r.t. the input image (atrous units keep it)."""
        return self._declared(name)[1]

    def decoder_end_point(self, decoder_output_stride):
        """The low-level end point the decoder reads at `decoder_output_stride`."""
        raise NotImplementedError(f"{type(self).__name__} must define `decoder_end_point`")

    def tf1_variable_map(self):
        """{TF1 checkpoint name: variable} of every weight; {} without TF1 checkpoints."""
        return {}

    def regularized_kernels(self):
        """The kernels weight decay applies to."""
        raise NotImplementedError(f"{type(self).__name__} must define `regularized_kernels`")
