"""DeepLabv3+ as Keras layers with DeepLab's TF1 variable names (see docs/architecture.md).

The package import is light (no TensorFlow): the backbone registry imports the backbone
modules on its first lookup (deeplab_ext.backbone.BUILTIN_BACKBONE_MODULES).
"""
