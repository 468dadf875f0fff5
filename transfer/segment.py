"""Semantic segmentation transfer: an FCN on a cebench encoder, mean IU and pixel accuracy.

    cebench transfer segment --encoder runs/ce/encoder.pt --data VOCdevkit/VOC2012 --out runs/seg   # paper preset
    cebench transfer segment --encoder random:tiny --data data/builtin/VOC --preset small --frozen --out runs/seg

    from cebench.transfer.segment import SegmentConfig, run, small_preset
    run(small_preset(encoder="runs/ce", data="data/builtin/VOC", out="runs/seg"))["metrics"]["mIoU"]

Model (`FCN`, Long et al., CVPR 2015): a 1x1 score conv on the encoder's last stage, upsampled
bilinearly and added to 1x1 score convs on up to `skips` earlier stages of finer stride
(FCN-16s/8s style; the skip scores start at zero as in the FCN paper), then upsampled to the
input size. `skips=0` is FCN-32s. `fc_dims` > 0 adds FCN's convolutionalised fc6
(`fc_kernel` x `fc_kernel`, zero-padded) and fc7 (1x1), `fc_dims` maps each, ReLU and dropout
`fc_dropout`, between the last stage and its (then zero-initialised) score layer.

Protocol (defaults = `SegmentConfig`): the encoder fine-tuned (or frozen with `frozen=True`: no
gradients, BatchNorm statistics fixed), images and masks resized to the encoder's input for
training, SGD momentum 0.9, lr 0.01, weight decay 1e-4, batch 8, 30 epochs with polynomial decay
(power 0.9, as torchvision's segmentation reference; `lr_schedule="constant"` for FCN's fixed
rate), flips, per-pixel cross-entropy ignoring label 255. `paper_preset()` is the paper's FCN-32s
on VOC 2012 (train -> val): fc6/fc7 4096 wide, dropout 0.5, no skips, SGD lr 1e-3 fixed, weight
decay 5e-4, batch 20 (Long et al., CVPR 2015).
Metrics from a `ConfusionMatrix` over the validation pixels (255 ignored): mean IU over classes
(background included) and pixel accuracy, in percent. With `eval_size="original"` (default) each
image is scored at its ORIGINAL resolution, as the paper's numbers are: the logits are upsampled
bilinearly to the image's H x W before the argmax and compared with the untouched mask;
`eval_size="input"` scores at the input size against a nearest-resized mask (the old way).
"""

from __future__ import annotations

import argparse
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cebench.core.errors import ConfigError, DatasetError
from cebench.transfer.args import (
    HarnessConfig,
    common_parser,
    config_from_args,
    preset_note,
    replace_validated,
    require_at_least,
)
from cebench.transfer.data import ResizedImages, calibration_batch, find_format, seeded_loader
from cebench.transfer.detect import select_levels
from cebench.transfer.encoders import draw_fresh_fc_, init_fc_head_
from cebench.transfer.harness import FrozenEncoder, Harness, Splits
from cebench.transfer.loop import make_optimizer, train_epochs
from cebench.transfer.metrics import ConfusionMatrix


@dataclass
class SegmentConfig(HarnessConfig):
    skips: int = 2  # 0: FCN-32s, 1: FCN-16s, 2: FCN-8s
    fc_dims: int = 0  # > 0: FCN's fc6 (fc_kernel x fc_kernel conv) and fc7 (1x1) on the last stage
    fc_kernel: int = 6  # AlexNet's fc6 sees pool5's 6 x 6
    fc_dropout: float = 0.5  # after fc6 and fc7
    eval_size: Literal["original", "input"] = "original"  # where predictions are scored
    lr_schedule: Literal["poly", "constant"] = "poly"
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 8

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 0, "skips", "fc_dims")
        require_at_least(self, 1, "fc_kernel")
        if not 0 <= self.fc_dropout < 1:
            raise ConfigError(f"config key 'fc_dropout' must be in [0, 1), got {self.fc_dropout}")


def paper_preset(**overrides: Any) -> SegmentConfig:
    """FCN-32s on the encoder as the paper ran it (VOC 2012 train -> val, mean IU at full size).

    Long et al., CVPR 2015 (Sec. 3-4): AlexNet's fc6/fc7 as convolutions (a 6x6 conv with 4096
    maps, a 1x1 conv with 4096 maps, ReLU and dropout 0.5 each; fresh here, as the paper
    re-initialises the fully connected layers), a zero-initialised class-scoring layer, bilinear
    upsampling by 32 (no skips), per-pixel cross-entropy, SGD momentum 0.9, weight decay 5e-4 and
    a fixed learning rate of 1e-3 (their FCN-AlexNet value) with mini-batches of 20 images;
    scored at each image's original resolution. FCN gives no epoch count for FCN-AlexNet: 30
    epochs is our choice. Not FCN: the network sees images resized to the encoder's square input
    (FCN runs on the whole image at its size), fc6 is zero-padded to keep the pool5 grid (FCN pads
    the input by 100 px and crops), biases get no doubled learning rate. The encoder gets
    Krähenbühl et al.'s data-dependent rescaling first (`rescale="full"`, the paper's transfer
    protocol), of the encoder and fc6/fc7 together; fc6/fc7 are drawn fresh (N(0, 0.01^2), bias
    0.1), or are the encoder's trained fc6/fc7 reshaped to 6x6 / 1x1 kernels when it carries them.
    """
    cfg = SegmentConfig(
        fc_dims=4096,
        fc_kernel=6,
        fc_dropout=0.5,
        skips=0,
        eval_size="original",
        train_split="train",
        val_split="val",
        optimizer="sgd",
        lr=1e-3,
        lr_schedule="constant",
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=20,
        epochs=30,
        rescale="full",
    )
    return replace_validated(cfg, **overrides)


def small_preset(**overrides: Any) -> SegmentConfig:
    """Settings for the built-in 32-64 px data: Adam, a few epochs, seconds on a CPU."""
    cfg = SegmentConfig(epochs=8, lr=3e-3, optimizer="adam", batch_size=16)
    return replace_validated(cfg, **overrides)


def _same_padding(k: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps the size under a k x k stride-1 conv."""
    before = (k - 1) // 2
    return (before, k - 1 - before, before, k - 1 - before)


class FCN(FrozenEncoder):
    """Encoder + score layers on the last stage and `skips` finer stages, summed coarse to fine.

    With `fc_dims` > 0 the last stage first goes through FCN's convolutionalised fc6 (a
    `fc_kernel` x `fc_kernel` conv, zero-padded so the grid keeps its size) and fc7 (1x1), each
    `fc_dims` wide with ReLU and dropout, and its (zero-initialised) score layer reads fc7."""

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        input_size: int,
        skips: int,
        frozen: bool,
        fc_dims: int = 0,
        fc_kernel: int = 6,
        fc_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        if frozen:
            self.freeze_encoder()
        levels = select_levels(encoder, input_size, skips + 1, min_stride=1) if skips else []
        last = encoder.feature_info[-1]
        names = [name for name, _, _ in levels if name != last.name][-skips:] if skips else []
        channels = {f.name: f.channels for f in encoder.feature_info}
        self.stages = [last.name] + names[::-1]  # coarse to fine
        self.fc: nn.Module | None = None
        if fc_dims:
            self.fc = nn.Sequential(
                OrderedDict(
                    # zero padding that keeps the grid ("same"; for even k one more at the end)
                    pad6=nn.ZeroPad2d(_same_padding(fc_kernel)),
                    fc6=nn.Conv2d(channels[last.name], fc_dims, fc_kernel),
                    relu6=nn.ReLU(inplace=True),
                    drop6=nn.Dropout(fc_dropout),
                    fc7=nn.Conv2d(fc_dims, fc_dims, 1),
                    relu7=nn.ReLU(inplace=True),
                    drop7=nn.Dropout(fc_dropout),
                )
            )
            draw_fresh_fc_([self.fc.fc6, self.fc.fc7])
            channels = {**channels, last.name: fc_dims}
        self.scores = nn.ModuleDict(
            {n: nn.Conv2d(channels[n], num_classes, 1) for n in self.stages}
        )
        for n in self.stages[1:] if self.fc is None else self.stages:
            nn.init.zeros_(self.scores[n].weight)
            nn.init.zeros_(self.scores[n].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_features(x)
        top = feats[self.stages[0]]
        out = self.scores[self.stages[0]](top if self.fc is None else self.fc(top))
        for name in self.stages[1:]:
            skip = self.scores[name](feats[name])
            out = (
                F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                + skip
            )
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationView(torch.utils.data.Dataset):
    """(image [3,S,S] normalised, mask int64) with the image resized to the encoder input and the
    mask to the same S x S (nearest), or kept at the image's own size with `original_masks`;
    flips for training."""

    def __init__(
        self,
        base,
        size: int,
        normalize: dict[str, list[float]],
        train: bool,
        original_masks: bool = False,
    ) -> None:
        self.base, self.size, self.normalize, self.train = base, size, normalize, train
        self.original_masks = original_masks

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.base[i]
        x = TF.resize(img, [self.size, self.size], antialias=True)
        x = TF.normalize(TF.to_tensor(x), self.normalize["mean"], self.normalize["std"])
        if self.original_masks:
            m = mask
        else:
            size = [self.size, self.size]
            m = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST)[0]
        if self.train and random.random() < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        return x, m


def segmentation_loss(model: nn.Module, batch, device: torch.device) -> torch.Tensor:
    x, m = batch
    return F.cross_entropy(model(x.to(device)), m.to(device), ignore_index=255)


def images_and_masks(batch):
    """Collate for `original_masks`: stacked images, masks kept as a list (their sizes differ)."""
    images, masks = zip(*batch, strict=True)
    return torch.stack(images), list(masks)


def predict_at(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class map [H, W] of one image's logits [C, h, w], bilinearly upsampled to `size` first."""
    up = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)
    return up[0].argmax(0)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device) -> dict[str, Any]:
    """Confusion-matrix metrics; masks given as a list are scored each at its own size, with the
    logits upsampled to it before the argmax (the paper's full-resolution scoring)."""
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for x, masks in loader:
        logits = model(x.to(device)).float().cpu()
        if isinstance(masks, torch.Tensor):
            cm.update(masks, logits.argmax(1))
            continue
        for one, mask in zip(logits, masks, strict=True):
            cm.update(mask, predict_at(one, tuple(mask.shape[-2:])))
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
        help="skip stages: 0 FCN-32s (paper preset), 1 FCN-16s, 2 FCN-8s (small preset)",
    )
    return p


def main(args: argparse.Namespace) -> int:
    extra = {"skips": args.skips}
    cfg = config_from_args(paper_preset if args.preset == "paper" else small_preset, args, extra)
    m = run(cfg, preset_note(args))["metrics"]
    print(f"segment: mIoU {m['mIoU']:.2f} pixel acc {m['pixel_acc']:.2f} -> {cfg.out}/metrics.json")
    return 0


class Segment(Harness):
    """FCN on the encoder (see the module docstring); `run = Segment().run`."""

    task = "segment"

    def load_data(self, cfg: SegmentConfig) -> Splits:
        from cebench.data import VOCSegmentation

        fmt, root = find_format(cfg.data)
        if fmt != "voc":
            raise DatasetError(
                f"--data {cfg.data}: segmentation needs VOC-format data (SegmentationClass/)"
            )
        tr, va = VOCSegmentation(root, cfg.train_split), VOCSegmentation(root, cfg.val_split)
        return Splits(tr, va, fmt)

    def calibration(self, cfg: SegmentConfig, data: Splits):
        return lambda size: calibration_batch(
            ResizedImages(data.train, size), cfg.calibration_images, cfg.seed
        )

    def rescale(self, cfg: SegmentConfig) -> str:
        # with fc6/fc7, they are rescaled together with the encoder: done in build
        return "none" if cfg.fc_dims else cfg.rescale

    def build(self, cfg: SegmentConfig, encoder, info, data: Splits, device) -> FCN:
        num_classes = len(data.train.classes) + 1  # + background
        model = FCN(
            encoder,
            num_classes,
            info.input_size,
            cfg.skips,
            cfg.frozen,
            cfg.fc_dims,
            cfg.fc_kernel,
            cfg.fc_dropout,
        ).to(device)
        if model.fc is not None:  # FCN's fc6/fc7 (trained ones as convolutions), score excluded
            fc = model.fc
            init_fc_head_(
                model,
                model.encoder,
                info,
                [fc.fc6, fc.fc7],
                lambda x: fc(model.encoder(x)),
                cfg.rescale,
                cfg.seed,
                self.calibration(cfg, data),
                cfg.keep_trained_fc,
            )
        return model

    def fit(self, cfg: SegmentConfig, model: FCN, data: Splits, info, device, log) -> None:
        opt = make_optimizer(
            model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
        )
        loader = seeded_loader(
            SegmentationView(data.train, info.input_size, info.normalize, True),
            cfg.batch_size,
            True,
            cfg.seed,
            cfg.num_workers,
        )
        steps = max(1, cfg.epochs * len(loader))
        if cfg.lr_schedule == "poly":
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: (1 - min(s, steps - 1) / steps) ** 0.9
            )
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        train_epochs(model, loader, segmentation_loss, opt, device, sched, cfg.epochs, log)

    def evaluate(
        self, cfg: SegmentConfig, model: FCN, data: Splits, info, device
    ) -> dict[str, Any]:
        original = cfg.eval_size == "original"
        val_loader = seeded_loader(
            SegmentationView(
                data.val, info.input_size, info.normalize, False, original_masks=original
            ),
            cfg.batch_size,
            False,
            cfg.seed,
            cfg.num_workers,
            images_and_masks if original else None,
        )
        classes = ["background", *data.train.classes]
        metrics = evaluate(model, val_loader, len(classes), device)
        metrics.update(
            score=metrics["mIoU"],
            format=data.format,
            classes=classes,
            train_images=len(data.train),
            val_images=len(data.val),
            stages=model.stages,
            eval_size=cfg.eval_size,
        )
        return metrics

    def checkpoint(self, cfg: SegmentConfig, model: FCN, data: Splits, info) -> dict[str, Any]:
        return {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "classes": ["background", *data.train.classes],
        }


def run(cfg: SegmentConfig, note: str | None = None) -> dict[str, Any]:
    """Train and evaluate one FCN; writes metrics.json, log.jsonl and model.pt under cfg.out."""
    return Segment().run(cfg, note)
