"""Semantic segmentation transfer: an FCN on a cebench encoder, mean IU and pixel accuracy.

    cebench transfer segment --encoder runs/ce/encoder.pt --data data/builtin/VOC --out runs/seg
    cebench transfer segment --encoder random:tiny --data data/builtin/VOC --preset small --frozen --out runs/seg

    from cebench.transfer.segment import SegmentConfig, run, small_preset
    run(small_preset(encoder="runs/ce", data="data/builtin/VOC", out="runs/seg"))["metrics"]["mIoU"]

Model (`FCN`, Long et al., CVPR 2015): a 1x1 score conv on the encoder's last stage, upsampled
bilinearly and added to 1x1 score convs on up to `skips` earlier stages of finer stride
(FCN-16s/8s style; the skip scores start at zero as in the FCN paper), then upsampled to the
input size. `skips=0` is FCN-32s.

Protocol (defaults = `SegmentConfig`): the paper fine-tunes an FCN from the pretrained encoder on
VOC2012 segmentation; here the encoder is fine-tuned (or frozen with `frozen=True`: no gradients,
BatchNorm statistics fixed), SGD momentum 0.9, lr 0.01, weight decay 1e-4, batch 8, 30 epochs with
polynomial decay (power 0.9, as torchvision's segmentation reference), flips, per-pixel
cross-entropy ignoring label 255. Metrics from a `ConfusionMatrix` over the validation pixels
(255 ignored): mean IU over classes (background included) and pixel accuracy, in percent.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cebench.core.config import validate
from cebench.core.device import pick_device
from cebench.core.errors import ConfigError, DatasetError
from cebench.core.io import atomic_save
from cebench.core.logger import MetricLogger
from cebench.transfer.args import (
    HarnessConfig,
    common_parser,
    config_from_args,
    replace_validated,
    require_at_least,
)
from cebench.transfer.data import ResizedImages, calibration_batch, find_format, seeded_loader
from cebench.transfer.detect import select_levels
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.loop import freeze, make_optimizer, set_seed, train_one_epoch, write_run
from cebench.transfer.metrics import ConfusionMatrix


@dataclass
class SegmentConfig(HarnessConfig):
    skips: int = 2  # 0: FCN-32s, 1: FCN-16s, 2: FCN-8s
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 8

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 0, "skips")


def paper_preset(**overrides: Any) -> SegmentConfig:
    """The protocol's defaults (`SegmentConfig()`) with `overrides`."""
    return replace_validated(SegmentConfig(), **overrides)


def small_preset(**overrides: Any) -> SegmentConfig:
    """Settings for the built-in 32-64 px data: Adam, a few epochs, seconds on a CPU."""
    cfg = SegmentConfig(epochs=8, lr=3e-3, optimizer="adam", batch_size=16)
    return replace_validated(cfg, **overrides)


class FCN(nn.Module):
    """Encoder + score layers on the last stage and `skips` finer stages, summed coarse to fine."""

    def __init__(
        self, encoder: nn.Module, num_classes: int, input_size: int, skips: int, frozen: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        if frozen:
            freeze(encoder)
        levels = select_levels(encoder, input_size, skips + 1, min_stride=1) if skips else []
        last = encoder.feature_info[-1]
        names = [name for name, _, _ in levels if name != last.name][-skips:] if skips else []
        channels = {f.name: f.channels for f in encoder.feature_info}
        self.stages = [last.name] + names[::-1]  # coarse to fine
        self.scores = nn.ModuleDict(
            {n: nn.Conv2d(channels[n], num_classes, 1) for n in self.stages}
        )
        for n in self.stages[1:]:
            nn.init.zeros_(self.scores[n].weight)
            nn.init.zeros_(self.scores[n].bias)

    def train(self, mode: bool = True) -> FCN:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_features(x)
        out = self.scores[self.stages[0]](feats[self.stages[0]])
        for name in self.stages[1:]:
            skip = self.scores[name](feats[name])
            out = (
                F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                + skip
            )
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationView(torch.utils.data.Dataset):
    """(image [3,S,S] normalised, mask int64 [S,S]) resized to the encoder input; flips for training."""

    def __init__(self, base, size: int, normalize: dict[str, list[float]], train: bool) -> None:
        self.base, self.size, self.normalize, self.train = base, size, normalize, train

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.base[i]
        x = TF.resize(img, [self.size, self.size], antialias=True)
        x = TF.normalize(TF.to_tensor(x), self.normalize["mean"], self.normalize["std"])
        m = TF.resize(mask[None], [self.size, self.size], interpolation=InterpolationMode.NEAREST)[
            0
        ]
        if self.train and random.random() < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        return x, m


def segmentation_loss(model: nn.Module, batch, device: torch.device) -> torch.Tensor:
    x, m = batch
    return F.cross_entropy(model(x.to(device)), m.to(device), ignore_index=255)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device) -> dict[str, Any]:
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for x, m in loader:
        cm.update(m, model(x.to(device)).argmax(1).cpu())
    cm.reduce_from_all_processes()
    return cm.compute()


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = common_parser(
        add_help, description=__doc__.splitlines()[0], epilog=__doc__.split("Model")[0]
    )
    p.add_argument(
        "--skips",
        type=int,
        default=None,
        help="skip stages: 0 FCN-32s, 1 FCN-16s, 2 FCN-8s (default)",
    )
    return p


def main(args: argparse.Namespace) -> int:
    extra = {"skips": args.skips}
    cfg = config_from_args(paper_preset if args.preset == "paper" else small_preset, args, extra)
    m = run(cfg)["metrics"]
    print(f"segment: mIoU {m['mIoU']:.2f} pixel acc {m['pixel_acc']:.2f} -> {cfg.out}/metrics.json")
    return 0


def run(cfg: SegmentConfig) -> dict[str, Any]:
    """Train and evaluate one FCN; writes metrics.json, log.jsonl and model.pt under cfg.out."""
    from cebench.data import VOCSegmentation

    validate(cfg)
    if not cfg.out:
        raise ConfigError("config key 'out' (--out) is required")
    start = time.time()
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    fmt, root = find_format(cfg.data)
    if fmt != "voc":
        raise DatasetError(
            f"--data {cfg.data}: segmentation needs VOC-format data (SegmentationClass/)"
        )
    tr, va = VOCSegmentation(root, cfg.train_split), VOCSegmentation(root, cfg.val_split)
    num_classes = len(tr.classes) + 1  # + background
    out = Path(cfg.out)

    def calibration(size: int) -> torch.Tensor:
        return calibration_batch(ResizedImages(tr, size), cfg.calibration_images, cfg.seed)

    encoder, info = resolve_encoder(
        cfg.encoder, cfg.input_size, calibration, cfg.seed, rescale=cfg.rescale, device=device
    )
    size = info["input_size"]
    set_seed(cfg.seed)
    model = FCN(encoder, num_classes, size, cfg.skips, cfg.frozen).to(device)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = seeded_loader(
        SegmentationView(tr, size, info["normalize"], True),
        cfg.batch_size,
        True,
        cfg.seed,
        cfg.num_workers,
    )
    steps = max(1, cfg.epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, steps - 1) / steps) ** 0.9)
    log = MetricLogger(out / "log.jsonl", total=cfg.epochs, desc="segment")
    try:
        for epoch in range(cfg.epochs):
            model.train()
            stats = train_one_epoch(model, loader, segmentation_loss, opt, device, sched)
            log.update(epoch + 1, loss=stats["loss"], lr=opt.param_groups[0]["lr"])
    finally:
        log.close()
    val_loader = seeded_loader(
        SegmentationView(va, size, info["normalize"], False),
        cfg.batch_size,
        False,
        cfg.seed,
        cfg.num_workers,
    )
    metrics = evaluate(model, val_loader, num_classes, device)
    metrics.update(
        score=metrics["mIoU"],
        format=fmt,
        classes=["background", *tr.classes],
        train_images=len(tr),
        val_images=len(va),
        stages=model.stages,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(
        {
            "task": "segment",
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "classes": ["background", *tr.classes],
            "encoder": info["spec"],
        },
        out / "model.pt",
    )
    return write_run(out, "segment", metrics, cfg, info, device, start)
