"""DeepLabv3+ (backbone, ASPP, decoder, 1x1 logits) plus PseudoSeg's classification head.

`DeepLabV3Plus.forward` runs one backbone pass and returns the decoder logits, the
classification logits and every backbone end point, so callers (the PseudoSeg train step,
Grad-CAM, the SGC) never need a second pass for the same images and batch-norm mode.
Batch norm mode (`training`) and dropout are separate switches, because PseudoSeg and the
parity references need training-mode batch norm with dropout off.
"""

import keras
import tensorflow as tf

from deeplab_ext.aspp import ASPP
from deeplab_ext.backbone import BACKBONE_OPTIONS, BackboneError, build_backbone
from deeplab_ext.decoder import Decoder
from deeplab_ext.layers import join_scope, synchronize_batch_norms

HEAD_BN_DECAY = 0.9997  # ASPP and decoder, whatever the backbone


@keras.saving.register_keras_serializable(package="deeplab_ext")
class DeepLabV3Plus(keras.Model):
    """DeepLabv3+ with DeepLab's variable layout; defaults are the paper's Xception-65 model.

    Args:
      num_classes: segmentation classes including background; the classification head
        predicts the `num_classes - 1` foreground classes.
      backbone: a registered backbone name (deeplab_ext.backbone.registered_backbones()):
        'xception_65' (paper default), 'xception_41', 'xception_71', 'resnet_v1_50_beta',
        'resnet_v1_101_beta' (or the plain 'resnet_v1_50/101').
      output_stride: 8, 16 or 32; later strides become atrous rates.
      atrous_rates: ASPP rates (DeepLab: 6/12/18 at stride 16, 12/24/36 at stride 8).
      multi_grid: unit rates of the last block, e.g. (1, 2, 4); None = (1, 1, 1).
      aspp_with_separable_conv / decoder_use_separable_conv: split separable 3x3 convs.
      add_image_level_feature: the ASPP image pooling branch.
      decoder_output_stride: 4 (paper) or 8; None disables the decoder (DeepLabv3).
      logits_kernel_size: kernel of the final `logits/semantic` conv.
      classification_head: add `{backbone}/logits` (global pool, dropout, 1x1 conv).
      cls_keep_prob: dropout keep probability of that head; None = the backbone's
        (0.5 for Xception as PseudoSeg, 1.0 for ResNet, whose DeepLab head has none).
      fine_tune_batch_norm: when False, batch norm always uses its moving statistics.
      width_multiplier, middle_flow_units: shrink the backbone for tests and the demo
        (channels: Xception and ResNet; middle-flow units: Xception); a backbone they do
        not apply to rejects values other than 1.0 / None.
      batch_norm_decay: moving-average decay of every batch norm; None = DeepLab's
        (0.9997, ResNet backbones 0.95), tuned for 30k+ steps: short runs need less, or the
        moving statistics that evaluation uses stay near their initial values.
      backbone_options: further keywords for the backbone's factory (backbone-specific,
        e.g. a keras-hub preset), forwarded untouched; None = none.
      sync_batch_norm: batch statistics over the global batch of all replicas (slower:
        one all-reduce per batch norm); the math of one device with the global batch.
    """

    def __init__(
        self,
        num_classes=21,
        backbone="xception_65",
        output_stride=16,
        atrous_rates=(6, 12, 18),
        multi_grid=None,
        aspp_with_separable_conv=True,
        add_image_level_feature=True,
        aspp_depth=256,
        decoder_output_stride=4,
        decoder_use_separable_conv=True,
        decoder_depth=256,
        logits_kernel_size=1,
        classification_head=True,
        cls_keep_prob=None,
        fine_tune_batch_norm=True,
        width_multiplier=1.0,
        middle_flow_units=None,
        batch_norm_decay=None,
        sync_batch_norm=False,
        backbone_options=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "deeplab_v3_plus")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.atrous_rates = tuple(int(r) for r in atrous_rates or ())
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.aspp_with_separable_conv = aspp_with_separable_conv
        self.add_image_level_feature = add_image_level_feature
        self.aspp_depth = aspp_depth
        self.decoder_output_stride = decoder_output_stride
        self.decoder_use_separable_conv = decoder_use_separable_conv
        self.decoder_depth = decoder_depth
        self.logits_kernel_size = logits_kernel_size
        self.classification_head = classification_head
        self.cls_keep_prob = cls_keep_prob
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.width_multiplier = width_multiplier
        self.middle_flow_units = middle_flow_units
        self.batch_norm_decay = batch_norm_decay
        self.sync_batch_norm = sync_batch_norm
        self.backbone_options = dict(backbone_options or {})
        repeated = sorted(set(self.backbone_options) & set(BACKBONE_OPTIONS))
        if repeated:
            raise BackboneError(
                f"backbone_options {repeated} are DeepLabV3Plus arguments; pass them directly"
            )

        self.backbone = build_backbone(
            backbone,
            output_stride=output_stride,
            multi_grid=multi_grid,
            width_multiplier=width_multiplier,
            middle_flow_units=middle_flow_units,
            bn_decay=batch_norm_decay,
            **self.backbone_options,
        )
        self.aspp = ASPP(
            self.atrous_rates,
            depth=aspp_depth,
            use_separable_conv=aspp_with_separable_conv,
            add_image_level_feature=add_image_level_feature,
            bn_decay=batch_norm_decay or HEAD_BN_DECAY,
        )
        self.decoder = (
            Decoder(
                depth=decoder_depth,
                use_separable_conv=decoder_use_separable_conv,
                bn_decay=batch_norm_decay or HEAD_BN_DECAY,
            )
            if decoder_output_stride
            else None
        )
        self.low_level_end_point = (
            self.backbone.decoder_end_point(decoder_output_stride)
            if decoder_output_stride
            else None
        )
        self.semantic_logits = keras.layers.Conv2D(
            num_classes,
            logits_kernel_size,
            padding="same",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            name="logits_semantic",
        )
        if classification_head:
            keep = self.backbone.classifier_keep_prob if cls_keep_prob is None else cls_keep_prob
            self.cls_dropout = keras.layers.Dropout(1.0 - keep)
            self.cls_logits = keras.layers.Conv2D(
                num_classes - 1,
                1,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.09),
                name="cls_logits",
            )
        if sync_batch_norm:
            synchronize_batch_norms(self)

    # ---------------------------------------------------------------- building
    def build(self, input_shape=(None, None, None, 3)):
        self.backbone.build(input_shape)
        feature_channels = self.backbone.end_point_channels(self.backbone.feature_end_point)
        feat = (None, None, None, feature_channels)
        self.aspp.build(feat)
        head_channels = self.aspp_depth
        if self.decoder is not None:
            low_channels = self._low_level_channels()
            self.decoder.build((feat[:3] + (self.aspp_depth,), (None, None, None, low_channels)))
            head_channels = self.decoder_depth
        self.semantic_logits.build((None, None, None, head_channels))
        if self.classification_head:
            self.cls_logits.build((1, 1, 1, feature_channels))
        self.built = True

    def _low_level_channels(self):
        return self.backbone.end_point_channels(self.low_level_end_point)

    # ---------------------------------------------------------------- forward
    def _bn_training(self, training):
        return bool(training) and self.fine_tune_batch_norm

    def extract_features(self, images, training=False):
        """Backbone end points ({name: tensor}) of [0, 255] images."""
        backbone = self.backbone
        return backbone(backbone.preprocess(images), training=self._bn_training(training))

    def segmentation_logits(self, end_points, training=False, dropout=None):
        """Decoder logits (output stride 4 by default) from backbone end points."""
        dropout = training if dropout is None else dropout
        bn_training = self._bn_training(training)
        x = self.aspp(
            end_points[self.backbone.feature_end_point], training=bn_training, dropout=dropout
        )
        if self.decoder is not None:
            x = self.decoder((x, end_points[self.low_level_end_point]), training=bn_training)
        return self.semantic_logits(x)

    def decoder_size(self, end_points):
        """Spatial size of the logits `segmentation_logits` gives for these end points."""
        name = self.low_level_end_point or self.backbone.feature_end_point
        return tf.shape(end_points[name])[1:3]

    def pool_features(self, end_points):
        """Global average pool of the last block (the classification head's input)."""
        return tf.reduce_mean(
            end_points[self.backbone.feature_end_point], axis=[1, 2], keepdims=True
        )

    def classify_pooled(self, pooled, dropout=False):
        """Classification logits [B, num_classes - 1] from pooled features [B, 1, 1, C]."""
        if not self.classification_head:
            raise ValueError("this model was built with classification_head=False")
        x = self.cls_dropout(pooled, training=dropout)
        return tf.reshape(self.cls_logits(x), [-1, self.num_classes - 1])

    def forward(self, images, training=False, dropout=None):
        """One backbone pass: returns {'logits', 'cls_logits'?, 'end_points'}."""
        dropout = training if dropout is None else dropout
        end_points = self.extract_features(images, training=training)
        out = {
            "logits": self.segmentation_logits(end_points, training, dropout),
            "end_points": end_points,
        }
        if self.classification_head:
            out["cls_logits"] = self.classify_pooled(self.pool_features(end_points), dropout)
        return out

    def call(self, images, training=False):
        out = self.forward(images, training=training)
        out.pop("end_points")
        return out

    def predict_logits(self, images):
        """Inference logits upsampled (bilinear, align_corners) to the input size."""
        from deeplab_ext.resize import resize_bilinear

        logits = self.forward(images, training=False)["logits"]
        return resize_bilinear(logits, tf.shape(images)[1:3])

    # ---------------------------------------------------------------- checkpoints
    def tf1_variable_map(self):
        """{DeepLab TF1 variable name: Keras variable} for every weight of the model."""
        out = dict(self.backbone.tf1_variable_map())
        out.update(self.aspp.tf1_variable_map())
        if self.decoder is not None:
            out.update(self.decoder.tf1_variable_map())
        out.update(
            {
                "logits/semantic/weights": self.semantic_logits.kernel,
                "logits/semantic/biases": self.semantic_logits.bias,
            }
        )
        if self.classification_head:
            out.update(
                join_scope(
                    f"{self.backbone.scope}/logits",
                    {"weights": self.cls_logits.kernel, "biases": self.cls_logits.bias},
                )
            )
        return out

    def regularized_kernels(self, include_classifier=True):
        """Kernels DeepLab weight-decays (every conv but the depthwise ones).

        `include_classifier=False` leaves out the classification head's kernel, for steps
        whose graph has no classification head (the release's supervised DeepLab).
        """
        kernels = self.backbone.regularized_kernels() + self.aspp.regularized_kernels()
        if self.decoder is not None:
            kernels += self.decoder.regularized_kernels()
        kernels.append(self.semantic_logits.kernel)
        if self.classification_head and include_classifier:
            kernels.append(self.cls_logits.kernel)
        return kernels

    def get_config(self):
        return dict(
            name=self.name,
            num_classes=self.num_classes,
            backbone=self.backbone_name,
            output_stride=self.output_stride,
            atrous_rates=self.atrous_rates,
            multi_grid=self.multi_grid,
            aspp_with_separable_conv=self.aspp_with_separable_conv,
            add_image_level_feature=self.add_image_level_feature,
            aspp_depth=self.aspp_depth,
            decoder_output_stride=self.decoder_output_stride,
            decoder_use_separable_conv=self.decoder_use_separable_conv,
            decoder_depth=self.decoder_depth,
            logits_kernel_size=self.logits_kernel_size,
            classification_head=self.classification_head,
            cls_keep_prob=self.cls_keep_prob,
            fine_tune_batch_norm=self.fine_tune_batch_norm,
            width_multiplier=self.width_multiplier,
            middle_flow_units=self.middle_flow_units,
            batch_norm_decay=self.batch_norm_decay,
            sync_batch_norm=self.sync_batch_norm,
            backbone_options=self.backbone_options or None,
        )
