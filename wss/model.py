"""The PseudoSeg Keras model: DeepLabv3+ plus the SGC, and one custom `train_step`.

A step (spec sections 3-4), with the passes the method needs and no more:
  1. labeled images, training-mode batch norm: decoder logits (L_s) and, from the same
     backbone pass, the classification logits (L_x in semi mode), Grad-CAM with the
     ground-truth image labels and the SGC trained against the masks (L_sa);
  2. weak view, training mode: decoder logits p (and L_x in weakly mode);
  3. weak view, inference-mode backbone: Grad-CAM and SGC logits m;
  4. pseudo labels P = calibrated fusion of p and m (stop-gradient);
  5. strong view, training mode: decoder logits supervised by P (L_u).
The same methods compute the parity references' PseudoSeg keys in the tests.
"""

import dataclasses

import keras
import tensorflow as tf

from deeplab_ext.deeplab import DeepLabV3Plus
from deeplab_ext.layers import synchronize_batch_norms
from deeplab_ext.resize import resize_bilinear
from wss import metrics
from wss.method import fusion, losses
from wss.method.gradcam import grad_cam
from wss.method.options import MethodOptions
from wss.method.sgc import SelfAttentionGradCAM, attention_valid_mask

# Names of the numbers a step reports (never 'loss': Keras's own tracker owns that name).
LOSS_NAMES = ("total_loss", "sup_loss", "unsup_loss", "cls_loss", "sgc_loss", "wd_loss")
MONITOR_NAMES = (
    "acc_seg",
    "acc_pseudo",
    "acc_weak",
    "acc_strong",
    "max_prob_pseudo",
    "learning_rate",
)


class PseudoSegModel(keras.Model):
    """DeepLabv3+ (`self.deeplab`) and the SGC (`self.sgc`) trained the PseudoSeg way."""

    def __init__(self, deeplab_config=None, options=None, class_weights=None, **kwargs):
        kwargs.setdefault("name", "pseudoseg")
        super().__init__(**kwargs)
        self.deeplab_config = dict(deeplab_config or {})
        self.options = options if options is not None else MethodOptions()
        # Per-class weights of the supervised losses (L_s, L_sa); None = unweighted.
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.deeplab = DeepLabV3Plus(**self.deeplab_config)
        self.num_classes = self.deeplab.num_classes
        self.sgc = SelfAttentionGradCAM(self.num_classes, self.options.attention_dim)
        if self.deeplab.sync_batch_norm:
            synchronize_batch_norms(self.sgc)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES + MONITOR_NAMES}

    # ------------------------------------------------------------------ building
    def build(self, input_shape=(None, None, None, 3)):
        """Builds every sub-layer from shapes (no forward pass), before any optimizer step."""
        self.deeplab.build(input_shape)
        backbone = self.deeplab.backbone
        self.sgc.build(
            sum(backbone.end_point_channels(name) for name in backbone.hypercolumn_end_points)
        )
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def tf1_variable_map(self):
        """DeepLab's and the release's names for every weight (for checkpoint loading)."""
        out = self.deeplab.tf1_variable_map()
        out.update(self.sgc.tf1_variable_map())
        return out

    def call(self, images, training=False):
        return self.deeplab(images, training=training)

    # ------------------------------------------------------------------ the method
    def _classifier(self):
        return lambda pooled, dropout: self.deeplab.classify_pooled(pooled, dropout)

    def cam_and_sgc(
        self,
        end_points,
        valid,
        decoder_size,
        image_labels=None,
        dropout=False,
        sgc_bn_training=True,
    ):
        """Grad-CAM of the last block and SGC logits from one backbone pass's end points.

        `valid` is the full-resolution valid mask; it reaches the attention as the release
        passes it (nearest to the decoder size, then to the CAM size). Returns a dict with
        'cam' (no background), 'cls_logits', 'labels' (used to mask the CAM), 'sgc_logits'.
        """
        backbone = self.deeplab.backbone
        cam, cls_logits, labels = grad_cam(
            end_points[backbone.cam_end_point], self._classifier(), image_labels, dropout=dropout
        )
        mask = attention_valid_mask(valid, decoder_size, tf.shape(cam)[1:3])
        hypercolumn = [end_points[name] for name in backbone.hypercolumn_end_points]
        sgc_logits = self.sgc(hypercolumn, cam, mask, training=sgc_bn_training)
        return {"cam": cam, "cls_logits": cls_logits, "labels": labels, "sgc_logits": sgc_logits}

    def pseudo_labels(self, weak_images, valid, image_labels=None, dropout=True):
        """Passes 2-4: inference-mode Grad-CAM/SGC, weak-view decoder logits, fusion.

        The inference-mode pass runs first: Keras updates batch-norm moving statistics as
        soon as a training-mode pass runs, while the release's graph applies all updates
        after the step, so every pass of a step must see the statistics of its start.
        Returns a dict: 'weak' (training-mode pass outputs), 'probs' (stop-gradient P),
        and, when the SGC is used, 'sgc_logits_upsampled' and the CAM/SGC outputs.
        """
        opts = self.options
        out = {}
        sgc_up = None
        if opts.uses_sgc:
            end_points = self.deeplab.extract_features(weak_images, training=False)
            decoder_size = self.deeplab.decoder_size(end_points)
            cam_out = self.cam_and_sgc(
                end_points,
                valid,
                decoder_size,
                image_labels,
                dropout=False,
                sgc_bn_training=opts.sgc_bn_training_in_weak_branch,
            )
            sgc_up = resize_bilinear(cam_out["sgc_logits"], decoder_size)
            out.update(cam_out, sgc_logits_upsampled=sgc_up)
        out["weak"] = self.deeplab.forward(weak_images, training=True, dropout=dropout)
        out["probs"] = fusion.pseudo_label_probs(
            out["weak"]["logits"],
            sgc_up,
            source=opts.source,
            gamma=opts.gamma,
            temperature=opts.temperature,
            logit_norm=opts.logit_norm,
            norm_form=opts.norm_form,
            soft=opts.soft_labels,
        )
        return out

    # ------------------------------------------------------------------ training
    def train_step(self, data):
        """One PseudoSeg step on `(labeled, extra)` batches (`labeled` alone when supervised).

        Losses are means over this replica's batch; the gradient of the total is divided by
        the number of replicas because the optimizer sums gradients across replicas.
        """
        opts = self.options
        labeled, extra = (data, None) if opts.mode == "supervised" else data
        dl = self.deeplab
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        logged = {}
        with tf.GradientTape() as tape:
            branch = None
            if extra is not None:
                # First: the inference-mode pass inside must see this step's BN statistics.
                branch = self.pseudo_labels(
                    extra["image"],
                    extra.get("weak_valid", extra["valid"]),
                    image_labels=extra["image_labels"] if opts.mode == "weakly" else None,
                )
            end_points = dl.extract_features(labeled["image"], training=True)
            logits = dl.segmentation_logits(end_points, training=True)
            sup = losses.supervised_ce(logits, labeled["label"], class_weights=self.class_weights)
            cls = sgc = unsup = tf.constant(0.0)
            if opts.uses_sgc:
                decoder_size = tf.shape(logits)[1:3]
                lab = self.cam_and_sgc(
                    end_points,
                    labeled["valid"],
                    decoder_size,
                    labeled["image_labels"],
                    dropout=True,
                )
                sgc = losses.supervised_ce(
                    lab["sgc_logits"], labeled["label"], class_weights=self.class_weights
                )
                if opts.mode == "semi":
                    cls = losses.classification_loss(lab["cls_logits"], labeled["image_labels"])
            if opts.mode == "weakly":
                cls = losses.classification_loss(
                    branch["weak"]["cls_logits"], extra["image_labels"]
                )
            if extra is not None:
                strong_logits = dl.forward(extra["strong"], training=True)["logits"]
                size = tf.shape(strong_logits)[1:3]
                valid = losses.resize_mask_nearest(extra["valid"], size)
                unsup = losses.unlabeled_ce(
                    branch["probs"],
                    strong_logits,
                    valid,
                    confidence_threshold=opts.confidence_threshold,
                    soft=opts.soft_labels,
                    weight=self._unlabeled_weight(),
                )
            wd = losses.weight_decay(self.deeplab.regularized_kernels(), opts.weight_decay)
            total = sup + unsup + cls + sgc + wd
            scaled = self.optimizer.scale_loss(total / replicas)
        logged["learning_rate"] = self._current_learning_rate()  # the rate this step uses
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

        logged.update(
            total_loss=total, sup_loss=sup, unsup_loss=unsup, cls_loss=cls, sgc_loss=sgc, wd_loss=wd
        )
        logged["acc_seg"] = self._class_accuracy(logits, labeled["label"])
        if extra is not None:
            label = losses.resize_mask_nearest(extra["label"], size)
            has_gt = tf.cast(tf.reduce_any(label != 255), tf.float32)
            for name, scores in (
                ("acc_pseudo", branch["probs"]),
                ("acc_weak", branch["weak"]["logits"]),
                ("acc_strong", strong_logits),
            ):
                self.trackers[name].update_state(self._class_accuracy(scores, label), has_gt)
            logged["max_prob_pseudo"] = metrics.mean_max_prob(branch["probs"], valid)
        for name, value in logged.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def _unlabeled_weight(self):
        """L_u's weight at this step: constant, or ramped up over the warm-up steps."""
        opts = self.options
        if opts.unlabeled_warmup_steps <= 0:
            return opts.unlabeled_weight
        progress = tf.cast(self.optimizer.iterations, tf.float32) / opts.unlabeled_warmup_steps
        return opts.unlabeled_weight * tf.minimum(1.0, progress)

    def _class_accuracy(self, scores, labels):
        labels = losses.resize_mask_nearest(labels, tf.shape(scores)[1:3])
        return metrics.mean_class_accuracy(tf.argmax(scores, axis=-1), labels, self.num_classes)

    def _current_learning_rate(self):
        lr = self.optimizer.learning_rate
        return tf.cast(lr, tf.float32)

    def test_step(self, data):
        raise NotImplementedError("evaluate with wss.eval (streaming mIoU), not Model.evaluate")

    def get_config(self):
        return {
            "name": self.name,
            "deeplab_config": self.deeplab_config,
            "options": dataclasses.asdict(self.options),
            "class_weights": self.class_weights,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["options"] = MethodOptions(**config["options"])
        return cls(**config)
