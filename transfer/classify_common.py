"""What the classification task's two harnesses share (transfer/finetune.py: the fine-tuning
protocol; transfer/probes.py: the frozen linear and kNN probes): the config, the data (splits,
views, calibration images), the loss and the scores. The protocols are described in
transfer/classify.py, the task's entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from cebench.core.errors import ConfigError
from cebench.transfer.args import HarnessConfig, require_at_least
from cebench.transfer.data import (
    ClassificationView,
    calibration_batch,
    classification_splits,
    find_format,
)
from cebench.transfer.encoders import MINUS_ONE_ONE
from cebench.transfer.harness import Harness, Splits
from cebench.transfer.metrics import top1, voc07_mean_ap, voc_mean_ap


@dataclass
class ClassifyConfig(HarnessConfig):
    protocol: Literal["linear", "knn", "finetune"] = "finetune"
    # `frozen` (finetune only): train the head alone on a frozen encoder
    layers: list[str] = field(default_factory=list)  # linear/knn: stages to probe; empty = all
    probe_dims: int = 9216
    probe_epochs: int = 100
    probe_lr: float = 1e-3
    probe_weight_decay: float = 5e-4
    probe_batch_size: int = 256
    knn_k: int = 20
    knn_temperature: float = 0.07
    epochs: int = 60
    lr: float = 0.001
    weight_decay: float = 5e-4
    batch_size: int = 32
    # finetune: lr x lr_gamma every lr_step_fraction of training; None: one step at 2/3
    lr_step_fraction: float | None = None
    lr_gamma: float = 0.1
    # finetune head: "linear" on the globally pooled last stage, or "fc": the flattened last
    # stage (pool5) -> fresh fc6, fc7 (fc_dims, ReLU, dropout fc_dropout) -> linear classifier
    head: Literal["linear", "fc"] = "linear"
    fc_dims: int = 4096
    fc_dropout: float = 0.5
    # finetune crops: training resized to resize_size (None: round(input_size * 256 / 227)) and
    # randomly cropped + flipped; test_crops 1 (a centre crop when random_crop, else a plain
    # resize) or 10 (corners + centre and their flips, logits averaged)
    random_crop: bool = False
    resize_size: int | None = None
    test_crops: int = 1
    # random crops: the resized side times s ~ U(min_scale, max_scale) first (Krähenbühl et al.:
    # 0.5-2); test_crop_mode "random": the 10 test crops are such random crops, the same for an
    # image in every evaluation (their code), "fixed": corners + centre and their flips
    min_scale: float = 1.0
    max_scale: float = 1.0
    test_crop_mode: Literal["fixed", "random"] = "fixed"
    # finetune optimisation: gradients clipped to this joint L2 norm (0: off; Caffe's
    # clip_gradients), conv/linear biases at bias_lr_mult x the lr (Caffe's lr_mult 2), and the
    # multi-label BCE "mean" over the labels or "sum_classes": summed over the classes and
    # averaged over the images (voc-classification's SigmoidCrossEntropyLoss, ~20x the mean)
    clip_grad_norm: float = 0.0
    bias_lr_mult: float = 1.0
    bce_reduction: Literal["mean", "sum_classes"] = "mean"
    ap: Literal["voc07", "area"] = "area"  # VOC data: which AP is `score` / `mAP` (both reported)
    shots: int | None = None
    label_fraction: float | None = None
    cache_dir: str | None = None  # None: <out>/../feature-cache; "none": no cache

    def validate(self) -> None:
        super().validate()
        require_at_least(
            self, 1, "probe_epochs", "probe_batch_size", "knn_k", "probe_dims", "fc_dims"
        )
        if self.probe_lr <= 0:
            raise ConfigError(f"config key 'probe_lr' must be > 0, got {self.probe_lr}")
        choices = {
            "head": ("linear", "fc"),
            "ap": ("voc07", "area"),
            "test_crops": (1, 10),
            "test_crop_mode": ("fixed", "random"),
            "bce_reduction": ("mean", "sum_classes"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"config key '{key}' must be one of {list(allowed)}, got {getattr(self, key)!r}"
                )
        if not 0 <= self.fc_dropout < 1:
            raise ConfigError(f"config key 'fc_dropout' must be in [0, 1), got {self.fc_dropout}")
        if self.lr_step_fraction is not None and not 0 < self.lr_step_fraction <= 1:
            raise ConfigError(
                f"config key 'lr_step_fraction' must be in (0, 1], got {self.lr_step_fraction}"
            )
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"config key 'lr_gamma' must be in (0, 1], got {self.lr_gamma}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(
                f"config keys 'min_scale', 'max_scale' need 0 < min_scale <= max_scale, got "
                f"{self.min_scale}, {self.max_scale}"
            )
        if self.clip_grad_norm < 0:
            raise ConfigError(
                f"config key 'clip_grad_norm' must be >= 0 (0: off), got {self.clip_grad_norm}"
            )
        if self.bias_lr_mult <= 0:
            raise ConfigError(f"config key 'bias_lr_mult' must be > 0, got {self.bias_lr_mult}")
        size = self.input_size
        if self.resize_size is not None and self.resize_size < (size or 1):
            raise ConfigError(
                f"config key 'resize_size' must be >= input_size {size or 1}, got {self.resize_size}"
            )


def classification_loss(
    logits: torch.Tensor, target: torch.Tensor, bce_reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy (class indices) or BCE over the non-ignored (target >= 0) labels: their mean,
    or ("sum_classes") their sum divided by the number of images, as voc-classification's
    SigmoidCrossEntropyLoss."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    keep = target >= 0
    if bce_reduction == "sum_classes":
        losses = F.binary_cross_entropy_with_logits(logits[keep], target[keep], reduction="sum")
        return losses / len(target)
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep])


def score(scores: torch.Tensor, targets: torch.Tensor, ap: str = "area") -> dict[str, Any]:
    """top-1 (class-index targets) or, for VOC targets, both APs: the area under the
    precision-recall curve (`mAP_area`) and VOC 2007's 11-point AP (`mAP_voc07`), each with its
    per-class list; `mAP` / `per_class_AP` repeat the one `ap` names."""
    if targets.dim() == 1:
        return {"top1": top1(scores, targets)}
    s, t = scores.numpy(), targets.numpy()
    area, area_per_class = voc_mean_ap(s, t)
    v07, v07_per_class = voc07_mean_ap(s, t)
    chosen = (v07, v07_per_class) if ap == "voc07" else (area, area_per_class)
    return {
        "mAP": chosen[0],
        "per_class_AP": chosen[1],
        "ap": ap,
        "mAP_voc07": v07,
        "mAP_area": area,
        "per_class_AP_voc07": v07_per_class,
        "per_class_AP_area": area_per_class,
    }


class ClassifyHarness(Harness):
    """The data side of both classification harnesses: the splits, the calibration images and
    the views set to the encoder's input size and normalisation."""

    task = "classify"

    def load_data(self, cfg: ClassifyConfig) -> Splits:
        fmt, root = find_format(cfg.data)
        train, val = classification_splits(
            root, fmt, cfg.train_split, cfg.val_split, 0, MINUS_ONE_ONE
        )
        return Splits(train, val, fmt)

    def calibration(self, cfg: ClassifyConfig, data: Splits):
        def images(size: int) -> torch.Tensor:
            view = ClassificationView(data.train.base, size, MINUS_ONE_ONE, False)
            return calibration_batch(view, cfg.calibration_images, cfg.seed)

        return images

    def log_total(self, cfg: ClassifyConfig) -> int | None:
        return None

    def describe(self, cfg: ClassifyConfig) -> str:
        return f"classify/{cfg.protocol}"

    def set_views(self, data: Splits, info) -> None:
        for view in (data.train, data.val):
            view.size, view.normalize = info.input_size, info.normalize
