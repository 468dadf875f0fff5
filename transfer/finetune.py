"""The classification task's fine-tuning harness (`protocol: finetune`, the paper's
classification column): encoder + a new head, trained together (or the head alone with
`frozen`), scored on one view or 10 crops. See transfer/classify.py for the protocol.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cebench.transfer.classify_common import (
    ClassifyConfig,
    ClassifyHarness,
    classification_loss,
    score,
)
from cebench.transfer.data import low_shot_indices, seeded_loader
from cebench.transfer.harness import FrozenEncoder, Splits
from cebench.transfer.heads import init_fc_head_
from cebench.transfer.loop import bias_lr_groups, make_optimizer, train_epochs


class GlobalPool(nn.Module):
    """Average over the spatial positions of a [N, C, H, W] map (anything else passes through)."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f.mean((2, 3)) if f.dim() == 4 else f


class FcLayers(nn.Sequential):
    """AlexNet's fc6, fc7 on the flattened last stage: Linear-ReLU-Dropout twice, freshly drawn
    (weights N(0, 0.01^2), biases 0.1: the re-initialisation of Krähenbühl et al.'s released
    VOC classification code), unless the encoder carries trained ones (`load_trained_fc_`)."""

    def __init__(self, in_features: int, dims: int = 4096, dropout: float = 0.5) -> None:
        super().__init__(
            nn.Flatten(1),
            nn.Linear(in_features, dims),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dims, dims),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        for m in self:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0.1)


class FinetuneModel(FrozenEncoder):
    """Encoder -> neck -> linear classifier `head` (weights N(0, 0.01^2), bias 0; 0.1 with the fc
    head, as Krähenbühl et al.'s VOC classification code redraws fc8).

    head="linear": the neck is a global average pool of the last stage; head="fc": the neck is
    `FcLayers` on the flattened (not pooled) last stage, e.g. AlexNet's pool5 (256 x 6 x 6)."""

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        head: str = "linear",
        fc_dims: int = 4096,
        fc_dropout: float = 0.5,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        if head == "fc":
            c, h, w = encoder.output_shape(input_size)
            self.neck: nn.Module = FcLayers(c * h * w, fc_dims, fc_dropout)
            width = fc_dims
        else:
            self.neck, width = GlobalPool(), encoder.num_features
        self.head = nn.Linear(width, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        # the fc head's fc8: voc-classification's redraw (N(0, 0.01^2), bias 0.1)
        nn.init.constant_(self.head.bias, 0.1 if head == "fc" else 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a batch [N, 3, H, W], or of N images' crops [N, K, 3, H, W]: the mean of each
    image's K crop logits (10-crop testing; the released VOC code sums the crops' fc8)."""
    if x.dim() == 5:
        n, k = x.shape[:2]
        return model(x.flatten(0, 1)).float().view(n, k, -1).mean(1)
    return model(x).float()


@torch.no_grad()
def _predict(model: nn.Module, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    scores, targets = [], []
    for x, y in loader:
        logits = predict_logits(model, x.to(device)).cpu()
        scores.append(logits.softmax(1) if y.dim() == 1 else logits.sigmoid())
        targets.append(y)
    return torch.cat(scores), torch.cat(targets)


def lr_milestones(cfg: ClassifyConfig, steps: int) -> list[int]:
    """Optimizer steps at which the lr is multiplied by `lr_gamma`."""
    if cfg.lr_step_fraction is None:
        return [max(1, (2 * steps) // 3)]
    every = max(1, round(cfg.lr_step_fraction * steps))
    return list(range(every, steps, every)) or [steps]


def build_finetune_model(
    cfg: ClassifyConfig, encoder: nn.Module, info, train, val, device, calibration
) -> FinetuneModel:
    """The fine-tuning network on `device`, its data views set for the protocol's crops; with the
    fc head and rescaling on, fc6/fc7 are rescaled together with the encoder (Krähenbühl et al.)."""
    keep = low_shot_indices(train.targets(), cfg.shots, cfg.label_fraction, cfg.seed)
    train.indices = [train.indices[i] for i in keep]
    train.crop, train.resize_size = ("random" if cfg.random_crop else "none"), cfg.resize_size
    ten = "random-ten" if cfg.test_crop_mode == "random" else "ten"
    val.crop = ten if cfg.test_crops == 10 else "center" if cfg.random_crop else "none"
    val.resize_size, val.seed = cfg.resize_size, cfg.seed
    train.scale = val.scale = (cfg.min_scale, cfg.max_scale)
    size = info.input_size
    model = FinetuneModel(
        encoder.to(device), len(train.classes), cfg.head, cfg.fc_dims, cfg.fc_dropout, size
    ).to(device)
    if cfg.head == "fc":  # fc8 (`head`) is drawn after the rescaling, as in voc-classification
        fc = [m for m in model.neck if isinstance(m, nn.Linear)]
        init_fc_head_(
            model,
            model.encoder,
            info,
            fc,
            model.features,
            cfg.rescale,
            cfg.seed,
            calibration,
            cfg.keep_trained_fc,
        )
    if cfg.frozen:
        model.freeze_encoder()
    return model


def finetune(cfg: ClassifyConfig, model: FinetuneModel, train, device, log) -> None:
    """SGD/Adam on every trainable parameter (biases at `bias_lr_mult` x the lr), step lr
    schedule (`lr_milestones`), gradients clipped at `clip_grad_norm` when > 0."""
    params = (
        model.parameters() if cfg.bias_lr_mult == 1 else bias_lr_groups(model, cfg.bias_lr_mult)
    )
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = seeded_loader(train, cfg.batch_size, True, cfg.seed, cfg.num_workers)
    steps = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, lr_milestones(cfg, steps), cfg.lr_gamma)

    def loss_fn(m: nn.Module, batch, dev) -> torch.Tensor:
        return classification_loss(m(batch[0].to(dev)), batch[1].to(dev), cfg.bce_reduction)

    train_epochs(model, loader, loss_fn, opt, device, sched, cfg.epochs, log, cfg.clip_grad_norm)


def evaluate_finetuned(
    cfg: ClassifyConfig, model: FinetuneModel, train, val, device
) -> dict[str, Any]:
    """Scores on `val` (10-crop averaged when test_crops=10): top-1 or both VOC APs."""
    batch = 64 // cfg.test_crops
    s, y = _predict(model, seeded_loader(val, batch, False, cfg.seed, cfg.num_workers), device)
    m = score(s, y, cfg.ap)
    return {
        "score": m.get("mAP", m.get("top1")),
        **m,
        "train_images": len(train),
        "val_images": len(val),
        "test_crops": cfg.test_crops,
        "head": cfg.head,
    }


class Finetune(ClassifyHarness):
    """Fine-tuning (see the module docstring); the "model" is `{"net": FinetuneModel}`."""

    def rescale(self, cfg: ClassifyConfig) -> str:
        # with the fc head, the rescaling covers the new fc6/fc7 too: done in build
        return "none" if cfg.head == "fc" else cfg.rescale

    def build(self, cfg: ClassifyConfig, encoder, info, data: Splits, device) -> dict[str, Any]:
        self.set_views(data, info)
        calibration = self.calibration(cfg, data)
        return {
            "net": build_finetune_model(
                cfg, encoder, info, data.train, data.val, device, calibration
            )
        }

    def fit(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device, log
    ) -> None:
        finetune(cfg, model["net"], data.train, device, log)

    def evaluate(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device
    ) -> dict[str, Any]:
        metrics = evaluate_finetuned(cfg, model["net"], data.train, data.val, device)
        return {**metrics, "format": data.format}

    def checkpoint(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info
    ) -> dict[str, Any]:
        weights = {k: v.cpu() for k, v in model["net"].state_dict().items()}
        return {"protocol": "finetune", "state_dict": weights, "classes": data.train.classes}
