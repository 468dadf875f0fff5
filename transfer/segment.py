"""Semantic segmentation transfer: an FCN on a cebench encoder, mean IU and pixel accuracy.

    cebench transfer segment --encoder runs/ce/encoder.pt --data VOCdevkit/VOC2011 \\
        --set sbd=benchmark_RELEASE/dataset --out runs/seg   # paper preset: SBD -> seg11valid
    cebench transfer segment --encoder random:tiny --data data/builtin/VOC --preset small --frozen --out runs/seg

    from cebench.transfer.segment import run
    from cebench.transfer.tasks import preset_config
    cfg = preset_config("segment", "small", encoder="runs/ce", data="data/builtin/VOC", out="runs/seg")  # presets/segment/small.yaml
    run(cfg)["metrics"]["mIoU"]

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
rate), flips, per-pixel cross-entropy ignoring label 255. The paper preset (`transfer/presets/segment/paper.yaml`) is FCN-AlexNet's
protocol (Long et al., CVPR 2015, and its reference code): FCN-32s with fc6/fc7 4096 wide,
dropout 0.5, trained on SBD train (`sbd`, `cebench.data.sbd`) and scored on seg11valid, each
image whole with 100 px input padding (`input_mode="full"`), the per-image summed loss, 20 images
per update, SGD lr 1e-4 fixed, weight decay 5e-4, 100,000 updates.
Metrics from a `ConfusionMatrix` over the validation pixels (255 ignored): mean IU over classes
(background included) and pixel accuracy, in percent. With `eval_size="original"` (default) each
image is scored at its ORIGINAL resolution, as the paper's numbers are: the logits are upsampled
bilinearly to the image's H x W before the argmax and compared with the untouched mask;
`eval_size="input"` scores at the input size against a nearest-resized mask (the old way).
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cebench.core.errors import ConfigError, DatasetError, TrainingError
from cebench.core.logger import Heartbeat
from cebench.transfer.args import (
    HarnessConfig,
    require_at_least,
)
from cebench.transfer.data import ResizedImages, calibration_batch, find_format, seeded_loader
from cebench.transfer.detect import select_levels
from cebench.transfer.harness import FrozenEncoder, Harness, Splits
from cebench.transfer.heads import draw_fresh_fc_, init_fc_head_
from cebench.transfer.loop import make_optimizer, param_groups, train_epochs
from cebench.transfer.metrics import ConfusionMatrix, per_class_table
from cebench.transfer.tasks import Option, TransferTask, register_task


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
    # training images: "voc" (`data`'s train_split) or "sbd" (the SBD folder `sbd`, its list
    # train_split, less any validation id); val_split "seg11valid" = FCN's validation list
    train_data: Literal["voc", "sbd"] = "voc"
    sbd: str = ""  # SBD's benchmark_RELEASE/dataset (img/, cls/*.mat, train.txt, val.txt)
    # "resize": images squashed to the encoder's square input, `batch_size` per step;
    # "full": each image at its own size, one at a time, `batch_size` images' gradients summed
    # per update (Caffe's iter_size), the input zero-padded by `input_pad` px (FCN: 100)
    input_mode: Literal["resize", "full"] = "resize"
    input_pad: int = 0
    loss_reduction: Literal["mean", "sum"] = "mean"  # per image: mean or sum (FCN) over pixels
    score_bias_lr: float = 1.0  # lr multiplier of the score layers' biases (FCN: 2, no decay)
    steps: int = 0  # > 0: this many updates instead of `epochs` passes

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 0, "skips", "fc_dims", "input_pad", "steps")
        require_at_least(self, 1, "fc_kernel")
        if not 0 <= self.fc_dropout < 1:
            raise ConfigError(f"config key 'fc_dropout' must be in [0, 1), got {self.fc_dropout}")
        if self.input_pad and self.input_mode != "full":
            raise ConfigError(
                "config key 'input_pad' needs input_mode=full (FCN pads the whole image)"
            )
        if self.score_bias_lr < 0:
            raise ConfigError(f"config key 'score_bias_lr' must be >= 0, got {self.score_bias_lr}")


def _same_padding(k: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps the size under a k x k stride-1 conv."""
    before = (k - 1) // 2
    return (before, k - 1 - before, before, k - 1 - before)


class FCN(FrozenEncoder):
    """Encoder + score layers on the last stage and `skips` finer stages, summed coarse to fine.

    With `fc_dims` > 0 the last stage first goes through FCN's convolutionalised fc6 (a
    `fc_kernel` x `fc_kernel` conv, zero-padded so the grid keeps its size) and fc7 (1x1), each
    `fc_dims` wide with ReLU and dropout, and its (zero-initialised) score layer reads fc7.
    With `input_pad` > 0 the input is zero-padded by that many pixels on each side, fc6 runs
    unpadded, and the scores, upsampled to the padded size, are cropped back to the input's."""

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
        input_pad: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_pad = input_pad
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
                    # zero padding that keeps the grid ("same"; for even k one more at the end);
                    # none with input padding, as FCN (the padded input leaves room for fc6)
                    pad6=nn.Identity() if input_pad else nn.ZeroPad2d(_same_padding(fc_kernel)),
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
        h, w = x.shape[-2:]
        p = self.input_pad
        if p:  # FCN's conv1 pad=100: zeros (the mean colour) around the normalised image
            x = F.pad(x, (p, p, p, p))
        feats = self.encoder.forward_features(x)
        top = feats[self.stages[0]]
        out = self.scores[self.stages[0]](top if self.fc is None else self.fc(top))
        for name in self.stages[1:]:
            skip = self.scores[name](feats[name])
            out = (
                F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                + skip
            )
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., p : p + h, p : p + w] if p else out


class SegmentationView(torch.utils.data.Dataset):
    """(image [3,S,S] normalised, mask int64) with the image resized to the encoder input and the
    mask to the same S x S (nearest), or kept at the image's own size with `original_masks`;
    `size=None` keeps both at the image's own size (FCN's whole-image input); flips for training."""

    def __init__(
        self,
        base,
        size: int | None,
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
        x = img if self.size is None else TF.resize(img, [self.size, self.size], antialias=True)
        x = TF.normalize(TF.to_tensor(x), self.normalize["mean"], self.normalize["std"])
        if self.original_masks or self.size is None:
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


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-pixel cross-entropy (255 ignored): "mean" over the batch's labelled pixels, or "sum"
    over each image's labelled pixels averaged over the images (Caffe's SoftmaxWithLoss with
    normalize: false, FCN's loss)."""
    if reduction == "sum":
        return F.cross_entropy(logits, target, ignore_index=255, reduction="sum") / len(logits)
    return F.cross_entropy(logits, target, ignore_index=255)


def train_updates(
    model: nn.Module,
    loader,
    opt: torch.optim.Optimizer,
    device: torch.device,
    sched,
    steps: int,
    iter_size: int,
    reduction: str,
    log,
) -> None:
    """`steps` optimizer updates, each over the gradients of `iter_size` batches averaged (Caffe's
    iter_size: FCN's batch of 20 is 20 single full-size images); the loader starts again
    (reshuffled) when it runs out. One log line per pass over the data and one at the end."""
    model.train()
    batches = iter(loader)
    passes, total, count = 0, 0.0, 0
    beat = Heartbeat("segment", total=steps)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(iter_size):
            batch = next(batches, None)
            if batch is None:
                passes += 1
                log.update(passes, loss=total / max(count, 1), lr=opt.param_groups[0]["lr"])
                total, count = 0.0, 0
                batches = iter(loader)
                batch = next(batches)
            x, m = batch
            loss = pixel_loss(model(x.to(device)), m.to(device), reduction) / iter_size
            if not math.isfinite(loss.item()):
                raise TrainingError(f"loss became {loss.item()} (lower the learning rate)")
            loss.backward()
            step_loss += loss.item()
        opt.step()
        sched.step()
        total += step_loss
        count += 1
        beat.tick(images=iter_size, loss=total / count)
    if count:
        log.update(passes + 1, loss=total / count, lr=opt.param_groups[0]["lr"])


def segmentation_splits(root, cfg: SegmentConfig):
    """(train, val) datasets: VOC's train_split or SBD's (less the val ids), and VOC's val_split;
    "seg11valid" is read from ImageSets/Segmentation/seg11valid.txt when there, else computed
    as FCN defines it: the root's segmentation val less SBD train (`cebench.data.sbd.seg11valid`)."""
    from cebench.data import VOCSegmentation
    from cebench.data.sbd import SBDSegmentation, read_id_list, sbd_root, seg11valid
    from cebench.data.voc import read_classes

    if cfg.train_data == "sbd" and not cfg.sbd:
        raise ConfigError(
            "config key 'sbd' is empty: train_data=sbd (the paper preset, FCN's protocol) trains "
            "on SBD; give --set sbd=PATH/benchmark_RELEASE/dataset, or --set train_data=voc "
            "--set val_split=val to train on the VOC root's train split"
        )
    listed = root / "ImageSets" / "Segmentation" / f"{cfg.val_split}.txt"
    if cfg.val_split == "seg11valid" and not listed.is_file():
        if not cfg.sbd:
            raise DatasetError(
                f"{listed}: not found, and seg11valid (VOC2011 val less SBD train) needs SBD's "
                "train list to be computed: give --set sbd=PATH, or --set val_split=val"
            )
        va = VOCSegmentation(root, "val")
        keep = set(seg11valid(va.ids, read_id_list(sbd_root(cfg.sbd) / "train.txt")))
        idx = [k for k, i in enumerate(va.ids) if i in keep]
        va.ids = [va.ids[k] for k in idx]
        va.images = [va.images[k] for k in idx]
        va.masks = [va.masks[k] for k in idx]
        va.split = "seg11valid"
        if not va.ids:
            raise DatasetError(f"{root}: seg11valid is empty (every val id is in SBD train)")
    else:
        va = VOCSegmentation(root, cfg.val_split)
    if cfg.train_data == "sbd":
        tr = SBDSegmentation(cfg.sbd, cfg.train_split, exclude=va.ids, classes=read_classes(root))
    else:
        tr = VOCSegmentation(root, cfg.train_split)
    return tr, va


class Segment(Harness):
    """FCN on the encoder (see the module docstring); `run = Segment().run`."""

    task = "segment"

    def load_data(self, cfg: SegmentConfig) -> Splits:
        fmt, root = find_format(cfg.data)
        if fmt != "voc":
            raise DatasetError(
                f"--data {cfg.data}: segmentation needs VOC-format data (SegmentationClass/)"
            )
        tr, va = segmentation_splits(root, cfg)
        return Splits(tr, va, fmt)

    def calibration(self, cfg: SegmentConfig, data: Splits):
        return lambda size: calibration_batch(
            ResizedImages(data.train, size), cfg.calibration_images, cfg.seed
        )

    def log_total(self, cfg: SegmentConfig) -> int | None:
        return None if cfg.steps or cfg.input_mode == "full" else cfg.epochs

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
            cfg.input_pad,
        ).to(device)
        if model.fc is not None:  # FCN's fc6/fc7 (trained ones as convolutions), score excluded
            fc, p = model.fc, cfg.input_pad
            init_fc_head_(
                model,
                model.encoder,
                info,
                [fc.fc6, fc.fc7],
                # calibrated on what training feeds them: with FCN's input padding, padded
                lambda x: fc(model.encoder(F.pad(x, (p, p, p, p)) if p else x)),
                cfg.rescale,
                cfg.seed,
                self.calibration(cfg, data),
                cfg.keep_trained_fc,
            )
        return model

    def fit(self, cfg: SegmentConfig, model: FCN, data: Splits, info, device, log) -> None:
        params: Any = model.parameters()
        if cfg.score_bias_lr != 1.0:  # FCN: the score layer's bias at lr x2 and without decay
            params = param_groups(
                model,
                cfg.weight_decay,
                bias_lr=cfg.score_bias_lr,
                bias_decay=False,
                is_bias=lambda n: n.startswith("scores.") and n.endswith(".bias"),
            )
        opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        full = cfg.input_mode == "full"
        loader = seeded_loader(
            SegmentationView(
                data.train, None if full else info.input_size, info.normalize, not full
            ),
            1 if full else cfg.batch_size,
            True,
            cfg.seed,
            cfg.num_workers,
        )
        iter_size = cfg.batch_size if full else 1
        steps = cfg.steps or max(1, cfg.epochs * math.ceil(len(loader) / iter_size))
        if cfg.lr_schedule == "poly":
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: (1 - min(s, steps - 1) / steps) ** 0.9
            )
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        if not full and not cfg.steps and cfg.loss_reduction == "mean":
            train_epochs(model, loader, segmentation_loss, opt, device, sched, cfg.epochs, log)
            return
        train_updates(model, loader, opt, device, sched, steps, iter_size, cfg.loss_reduction, log)

    def evaluate(
        self, cfg: SegmentConfig, model: FCN, data: Splits, info, device
    ) -> dict[str, Any]:
        original = cfg.eval_size == "original"
        full = cfg.input_mode == "full"  # each image whole, one at a time, scored at its size
        val_loader = seeded_loader(
            SegmentationView(
                data.val,
                None if full else info.input_size,
                info.normalize,
                False,
                original_masks=original,
            ),
            1 if full else cfg.batch_size,
            False,
            cfg.seed,
            cfg.num_workers,
            images_and_masks if original else None,
        )
        classes = ["background", *data.train.classes]
        metrics = evaluate(model, val_loader, len(classes), device)
        metrics.update(
            per_class_IoU=dict(zip(classes, metrics["per_class_iou"], strict=True)),
            score=metrics["mIoU"],
            format=data.format,
            classes=classes,
            train_images=len(data.train),
            val_images=len(data.val),
            train_data=cfg.train_data,
            val_split=cfg.val_split,
            input_mode=cfg.input_mode,
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


TASK = register_task(
    TransferTask(
        name="segment",
        module=__name__,
        config=SegmentConfig,
        summary="FCN on the encoder (FCN-32s fc6/fc7 option); mean IU at original size",
        options=(
            Option(
                "--skips",
                "skips",
                type=int,
                help="skip stages: 0 FCN-32s (paper preset), 1 FCN-16s, 2 FCN-8s (small preset)",
            ),
        ),
        settings=(
            "encoder",
            "data",
            "train_data",
            "sbd",
            ("train_split", "train"),
            ("val_split", "test"),
            ("input_size", "size"),
            ("input_mode", "input"),
            ("input_pad", "pad"),
            "eval_size",
            "frozen",
            "fc_dims",
            "fc_dropout",
            "skips",
            "rescale",
            "keep_trained_fc",
            ("optimizer", "optim"),
            "lr",
            "score_bias_lr",
            ("loss_reduction", "loss"),
            "epochs",
            "steps",
            ("batch_size", "batch"),
        ),
        metrics=("score", "mIoU"),
        report=lambda m, cfg: [
            f"segment: mIoU {m['mIoU']:.2f} pixel acc {m['pixel_acc']:.2f} -> {cfg.out}/metrics.json",
            per_class_table(m["per_class_IoU"], "IoU (%)"),
        ],
    )
)
