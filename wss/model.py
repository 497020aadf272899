"""The PseudoSeg Keras model: DeepLabv3+ plus the SGC, and one custom `train_step`.

A step (spec sections 3-4), with the passes the method needs and no more:
  1. labeled images, training-mode batch norm: decoder logits (L_s) and, from the same
     backbone pass, the classification logits (L_x in semi mode), Grad-CAM with the
     ground-truth image labels and the SGC trained against the masks (L_sa);
  2. weak view, training mode: decoder logits p (and L_x in weakly mode);
  3. weak view, inference-mode backbone: Grad-CAM and SGC logits m;
  4. pseudo labels P = calibrated fusion of p and m (stop-gradient);
  5. strong view, training mode: decoder logits supervised by P (L_u).
Pass 1 is `labeled_pass`, passes 2-4 are `pseudo_labels` (the one weak branch: the
step, TensorBoard images, calibration and the pictures all run it; 4 is `fuse`), pass 5 is
`strong_pass`. The same methods compute the parity references' PseudoSeg keys in the tests.

`train_step` = `compute_losses` (every pass and loss term, as tests/test_step_parity.py
checks against one step of the release's graph) + the tape's gradient +
`apply_step_gradients` (DeepLab's x2 on biases, then the optimizer). Batch-norm moving
statistics are updated as often as the release's graph updates them (shared passes count
twice), and the weak branch's inference-mode pass reads them before any update.
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from deeplab_ext.deeplab import DeepLabV3Plus
from deeplab_ext.layers import repeated_batch_norm_updates, synchronize_batch_norms
from deeplab_ext.resize import resize_bilinear
from wss.data.descriptors import IGNORE_LABEL
from wss.method import fusion, monitors
from wss.method import losses as losses_lib
from wss.method.gradcam import grad_cam
from wss.method.options import MethodOptions
from wss.method.sgc import SelfAttentionGradCAM, attention_valid_mask

# The loss terms of a step (their sum is 'total'): L_s, L_u, L_x, L_sa, weight decay.
LOSS_TERMS = ("semantic", "consistency", "cls", "self_attention", "regularization")
# Names of the numbers a step reports (never 'loss': Keras's own tracker owns that name).
LOSS_NAMES = ("total_loss", "sup_loss", "unsup_loss", "cls_loss", "sgc_loss", "wd_loss")
LOSS_TERMS_LOGGED = ("total",) + LOSS_TERMS
MONITOR_NAMES = (
    "acc_seg",
    "acc_pseudo",
    "acc_weak",
    "acc_strong",
    "max_prob_pseudo",
    "learning_rate",
)


@keras.saving.register_keras_serializable(package="wss")
class PseudoSegModel(keras.Model):
    """DeepLabv3+ (`self.deeplab`) and the SGC (`self.sgc`) trained the PseudoSeg way."""

    def __init__(
        self,
        deeplab_config=None,
        options=None,
        class_weights=None,
        bias_gradient_multiplier=2.0,
        **kwargs,
    ):
        kwargs.setdefault("name", "pseudoseg")
        super().__init__(**kwargs)
        self.deeplab_config = dict(deeplab_config or {})
        self.options = options if options is not None else MethodOptions()
        # Per-class weights of the supervised losses (L_s, L_sa); None = unweighted.
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        # DeepLab doubles the learning rate of biases (see `gradient_multipliers`).
        self.bias_gradient_multiplier = float(bias_gradient_multiplier)
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

    def pseudo_labels(
        self,
        weak_images,
        valid,
        image_labels=None,
        dropout=True,
        backbone_bn_updates=1,
        *,
        with_sgc=None,
        inference_logits=False,
        weak_training=True,
    ):
        """Passes 2-4, the weak branch: inference-mode Grad-CAM/SGC, weak-view decoder
        logits, fusion (`fuse`). Every caller (the step, calibration, pictures) runs this.

        The inference-mode pass runs first: Keras updates batch-norm moving statistics as
        soon as a training-mode pass runs, while the release's graph applies all updates
        after the step, so every pass of a step must see the statistics of its start.
        `backbone_bn_updates`: how many updates the training-mode pass gives the backbone's
        moving statistics (2 in weakly mode, where the release runs the weak view through
        it twice). Returns a dict: 'weak' (training-mode pass outputs), 'probs' (stop-gradient P),
        and, when the SGC is used, 'sgc_logits_upsampled' and the CAM/SGC outputs.

        The keywords after `*` serve diagnostics (wss.evaluation.reliability); their defaults are the
        step's. `with_sgc`: run Grad-CAM and the SGC even where the options do not use
        them (default: `MethodOptions.uses_sgc`); `inference_logits`: also return the
        decoder logits of the inference-mode pass ('inference_logits'); `weak_training`
        False: p comes from that inference-mode pass instead of a training-mode one.
        """
        opts = self.options
        with_sgc = opts.uses_sgc if with_sgc is None else with_sgc
        inference_logits = inference_logits or not weak_training
        out = {}
        if with_sgc or inference_logits:
            end_points = self.deeplab.extract_features(weak_images, training=False)
            decoder_size = self.deeplab.decoder_size(end_points)
            if inference_logits:
                out["inference_logits"] = self.deeplab.segmentation_logits(end_points)
        if with_sgc:
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
        if weak_training:
            with repeated_batch_norm_updates(self.deeplab.backbone, backbone_bn_updates):
                out["weak"] = self.deeplab.forward(weak_images, training=True, dropout=dropout)
        else:
            out["weak"] = {"logits": out["inference_logits"]}
        out["probs"] = self.fuse(out)
        return out

    def fuse(self, branch, options=None):
        """Pass 4: the pseudo labels P (stop-gradient) of a `pseudo_labels` output, the
        fusion rule of `options` (default: the model's MethodOptions; calibration passes
        one per variant) over p and the upsampled m."""
        return fusion.fuse(
            branch["weak"]["logits"],
            branch.get("sgc_logits_upsampled"),
            self.options if options is None else options,
        )

    @contextlib.contextmanager
    def frozen_statistics(self):
        """Puts every batch-norm moving statistic back as it was when the block exits.

        A training-mode pass outside training (the weak branch in calibration or in
        pictures) moves them; a diagnostic must not change the model it reads, and each
        batch it reads must see the same statistics.
        """
        stats = [w for w in self.weights if "moving_" in w.path]
        saved = [w.numpy() for w in stats]
        try:
            yield
        finally:
            for w, value in zip(stats, saved):
                w.assign(value)

    # ------------------------------------------------------------------ training
    def regularized_kernels(self):
        """The kernels this step weight-decays: DeepLab's (no depthwise kernels, BN
        parameters, biases or SGC convs), the classification head only when trained."""
        return self.deeplab.regularized_kernels(include_classifier=self.options.uses_classifier)

    def compute_losses(self, data, dropout=True):
        """Every forward pass of one step and its losses (what `train_step` differentiates).

        `data` is `(labeled, extra)` (`labeled` alone when supervised). Training-mode passes
        update the batch-norm moving statistics as they run, each statistic as many times
        as the release's graph updates it per step (spec parity_step.md): the release runs
        the labeled batch through the backbone twice when the SGC is on (L_s, then L_x /
        L_sa) and the weak view twice in weakly mode (L_x, then the pseudo-label logits);
        we share those passes and count their updates twice. `dropout=False` turns both
        dropouts off (the parity references' setting).

        Returns (losses, outputs): losses {'semantic', 'consistency', 'cls',
        'self_attention', 'regularization', 'total'} (scalars, means over this replica's
        batch); outputs {'logits', 'branch', 'strong_logits', 'valid'} for the monitors.
        """
        opts = self.options
        labeled, extra = (data, None) if opts.mode == "supervised" else data
        zero = tf.constant(0.0)
        losses = dict(semantic=zero, consistency=zero, cls=zero, self_attention=zero)
        outputs = {}
        branch = None
        if extra is not None:
            # First: the inference-mode pass inside must see this step's BN statistics.
            branch = self.pseudo_labels(
                extra["image"],
                extra.get("weak_valid", extra["valid"]),
                image_labels=extra["image_labels"] if opts.mode == "weakly" else None,
                dropout=dropout,
                backbone_bn_updates=2 if opts.mode == "weakly" else 1,
            )
            if opts.mode == "weakly":
                losses["cls"] = losses_lib.classification_loss(
                    branch["weak"]["cls_logits"], extra["image_labels"]
                )
        logits, labeled_losses = self.labeled_pass(labeled, dropout)
        losses.update(labeled_losses)
        outputs["logits"] = logits
        if extra is not None:
            strong_logits, valid, losses["consistency"] = self.strong_pass(extra, branch, dropout)
            outputs.update(branch=branch, strong_logits=strong_logits, valid=valid)
        losses["regularization"] = losses_lib.weight_decay(
            self.regularized_kernels(), opts.weight_decay
        )
        losses["total"] = tf.add_n([losses[name] for name in LOSS_TERMS])
        return losses, outputs

    def labeled_pass(self, labeled, dropout=True):
        """Pass 1: the labeled batch through the training-mode model, and its losses.

        One backbone pass feeds the decoder (L_s) and, when the SGC is on, Grad-CAM with the
        ground-truth image labels and the SGC (L_sa) and, in semi mode, the classification
        head (L_x). Returns (decoder logits, {loss name: value}).
        """
        opts = self.options
        dl = self.deeplab
        with repeated_batch_norm_updates(dl.backbone, 2 if opts.uses_sgc else 1):
            end_points = dl.extract_features(labeled["image"], training=True)
        logits = dl.segmentation_logits(end_points, training=True, dropout=dropout)
        out = {
            "semantic": losses_lib.supervised_ce(
                logits, labeled["label"], class_weights=self.class_weights
            )
        }
        if opts.uses_sgc:
            lab = self.cam_and_sgc(
                end_points,
                labeled["valid"],
                tf.shape(logits)[1:3],
                labeled["image_labels"],
                dropout=dropout,
            )
            out["self_attention"] = losses_lib.supervised_ce(
                lab["sgc_logits"], labeled["label"], class_weights=self.class_weights
            )
            if opts.mode == "semi":
                out["cls"] = losses_lib.classification_loss(
                    lab["cls_logits"], labeled["image_labels"]
                )
        return logits, out

    def strong_pass(self, extra, branch, dropout=True):
        """Pass 5: the strong view through the training-mode model, supervised by the weak
        branch's pseudo labels (L_u, eq. 1 of the paper) where the shared valid mask (padding
        and CutOut excluded) is 1. Returns (strong logits, valid mask at their size, L_u)."""
        opts = self.options
        strong_logits = self.deeplab.forward(extra["strong"], training=True, dropout=dropout)[
            "logits"
        ]
        valid = losses_lib.resize_mask_nearest(extra["valid"], tf.shape(strong_logits)[1:3])
        loss = losses_lib.unlabeled_ce(
            branch["probs"],
            strong_logits,
            valid,
            confidence_threshold=opts.confidence_threshold,
            soft=opts.soft_labels,
            weight=self._unlabeled_weight(),
        )
        return strong_logits, valid, loss

    def gradient_multipliers(self):
        """{variable path: multiplier} of the gradients the optimizer scales.

        DeepLab's `get_model_gradient_multipliers`, as the release trains: every variable
        whose TF1 name contains 'biases' learns at twice the rate (`logits/semantic/biases`
        and the classification head's biases); the last-layer multiplier is 1.
        """
        return {
            var.path: self.bias_gradient_multiplier
            for name, var in self.tf1_variable_map().items()
            if "biases" in name and self.bias_gradient_multiplier != 1.0
        }

    def apply_step_gradients(self, grads, variables):
        """Scales the gradients by `gradient_multipliers` and applies them (variables whose
        gradient is None are left alone)."""
        multipliers = self.gradient_multipliers()
        pairs = [
            (g if v.path not in multipliers else g * multipliers[v.path], v)
            for g, v in zip(grads, variables)
            if g is not None
        ]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def train_step(self, data):
        """One PseudoSeg step on `(labeled, extra)` batches (`labeled` alone when supervised).

        Losses are means over this replica's batch; the gradient of the total is divided by
        the number of replicas because the optimizer sums gradients across replicas.
        """
        labeled, extra = (data, None) if self.options.mode == "supervised" else data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            losses, outputs = self.compute_losses(data)
            scaled = self.optimizer.scale_loss(losses["total"] / replicas)
        logged = {"learning_rate": self._current_learning_rate()}  # the rate this step uses
        variables = self.trainable_variables
        self.apply_step_gradients(tape.gradient(scaled, variables), variables)

        logged.update({name: losses[term] for term, name in zip(LOSS_TERMS_LOGGED, LOSS_NAMES)})
        logged["acc_seg"] = self._class_accuracy(outputs["logits"], labeled["label"])
        if extra is not None:
            branch, strong_logits = outputs["branch"], outputs["strong_logits"]
            label = losses_lib.resize_mask_nearest(extra["label"], tf.shape(strong_logits)[1:3])
            has_gt = tf.cast(tf.reduce_any(label != IGNORE_LABEL), tf.float32)
            for name, scores in (
                ("acc_pseudo", branch["probs"]),
                ("acc_weak", branch["weak"]["logits"]),
                ("acc_strong", strong_logits),
            ):
                self.trackers[name].update_state(self._class_accuracy(scores, label), has_gt)
            logged["max_prob_pseudo"] = monitors.mean_max_prob(branch["probs"], outputs["valid"])
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
        labels = losses_lib.resize_mask_nearest(labels, tf.shape(scores)[1:3])
        return monitors.mean_class_accuracy(tf.argmax(scores, axis=-1), labels, self.num_classes)

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
            "bias_gradient_multiplier": self.bias_gradient_multiplier,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["options"] = MethodOptions(**config["options"])
        return cls(**config)


def build_model(num_classes, model_settings, options, class_weights=None):
    """The PseudoSeg model of a RunConfig's model settings (a wss.experiment.ModelSettings)
    and method options, for `num_classes` classes, built (all variables exist)."""
    config = dataclasses.asdict(model_settings)
    config["num_classes"] = num_classes
    model = PseudoSegModel(deeplab_config=config, options=options, class_weights=class_weights)
    model.build()
    return model
