"""Object detection transfer: torchvision Faster R-CNN on a cebench encoder, VOC07 mAP and COCO AP.

    cebench transfer detect --encoder runs/ce/encoder.pt --data VOCdevkit/VOC2007 --out runs/det   # paper preset
    cebench transfer detect --encoder runs/ce --data data/builtin/VOC --preset small --head c4 --out runs/det
    cebench transfer detect --encoder random:tiny --coco-ann data/builtin/coco/annotations/instances_train.json \\
        --coco-images data/builtin/VOC/JPEGImages --preset small --frozen --out runs/det-coco

    from cebench.transfer.detect import run
    from cebench.transfer.tasks import preset_config
    cfg = preset_config("detect", "small", encoder="runs/ce", data="data/builtin/VOC", out="runs/det")  # presets/detect/small.yaml
    run(cfg)["metrics"]["AP50"]

Model (assembled from torchvision parts, as its detection references do), by `head`:
- "fpn" (default): the encoder as backbone (`EncoderBackbone`: the last stage of each distinct
  stride >= 4, the deepest `max_levels`, a FeaturePyramidNetwork over them when there are several),
  RoIAlign (MultiScaleRoIAlign, `roi_size`) and a two-layer MLP box head (no dropout);
- "c4": Fast R-CNN on AlexNet (Girshick, ICCV 2015): one map, `roi_stage` (default the deepest
  stage of stride <= 16: conv5, whose pool5 the RoI pooling replaces), no FPN, RoI max pooling to
  `roi_size` x `roi_size` (6 as AlexNet's pool5), FRESH fc6 and fc7 (`representation_size`, ReLU,
  dropout `fc_dropout`) and the class / box predictor.
Both: an AnchorGenerator sized to the detector's image size, the RPN (or, with
`proposals="selective-search"`, fixed per-image boxes and no RPN), per-class NMS
`box_nms_thresh`. GeneralizedRCNNTransform scales each image to a shorter side of `min_size`
(longer side <= `max_size`); None for both = the encoder's `input_size`, so 32-64 px data stays
small. The encoder is fully convolutional and runs at that size (checked before training).

Protocol (defaults = `DetectConfig`): the encoder fine-tuned (or frozen with `frozen=True`: no
gradients, BatchNorm statistics fixed), SGD momentum 0.9, lr 0.01, weight decay 1e-4, batch 4,
20 epochs with a x0.1 step at `lr_step_at` = 2/3, horizontal flips (torchvision's detection
reference settings scaled to one device). The paper preset (`transfer/presets/detect/paper.yaml`) is the paper's Fast R-CNN setting:
c4 head, 4096-wide fc6/fc7 with dropout 0.5, 600 / 1000 px images, VOC2007 trainval -> test,
SGD lr 1e-3 (x0.1 after 3/4), weight decay 5e-4, 2 images x 64 RoIs, NMS 0.3, VOC07 mAP,
selective search proposals computed once per image (`cebench.transfer.proposals`, cached) fed to
the RoI heads with no RPN (`FastRCNN`), conv1 at lr 0, biases at lr x2 without weight decay.
Metrics (always all of them): `mAP_voc07`, the VOC2007 devkit's 11-point mAP at IoU 0.5 with its
matching rule (`VOCDetectionEvaluator`: difficult objects neither TP nor FP, duplicates FP,
+1-pixel widths), and pycocotools COCOeval bbox AP (IoU .50:.95), AP50 and AP75 in percent
(difficult objects given as iscrowd), plus per-class APs. `score` is `mAP_voc07` with
`ap="voc07"`, else AP50 (`ap="coco"`, the default).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_pool
from torchvision.transforms import functional as TF

from cebench.core.errors import ConfigError, DatasetError
from cebench.data.layout import guess_coco_val
from cebench.pretrain.models.base import Encoder
from cebench.transfer.args import (
    HarnessConfig,
    require_at_least,
)
from cebench.transfer.data import calibration_batch, find_format, seeded_loader
from cebench.transfer.harness import FrozenEncoder, Harness, Splits
from cebench.transfer.heads import draw_fresh_fc_, init_fc_head_
from cebench.transfer.loop import make_optimizer, param_groups, train_epochs
from cebench.transfer.metrics import (
    DetectionEvaluator,
    VOCDetectionEvaluator,
    coco_gt_from_targets,
    per_class_table,
)
from cebench.transfer.tasks import Option, TransferTask, register_task


@dataclass
class DetectConfig(HarnessConfig):
    # `data`: a VOC root (or the built-in data's root), or else COCO json:
    coco_ann: str = ""  # training annotations
    coco_images: str = ""  # ... and their image folder
    coco_val_ann: str = ""  # evaluation json (default: coco_ann with 'train' -> 'val')
    # "fpn": an FPN over the deepest `max_levels` stages of stride >= 4, RoIAlign, 2-layer MLP head;
    # "c4": Fast R-CNN: one map (`roi_stage`), RoI max pooling, fresh fc6/fc7 with dropout
    head: Literal["fpn", "c4"] = "fpn"
    roi_stage: str = ""  # c4: "" = the deepest stage of stride <= 16 (AlexNet: conv5)
    fpn_channels: int = 256
    max_levels: int = 3
    roi_size: int = 7
    representation_size: int = 1024
    fc_dropout: float = 0.5  # c4: dropout after fc6 and fc7
    min_size: int | None = None  # detector's image size: shorter side (None: the encoder's input)
    max_size: int | None = None  # ... longer side at most (None: min_size, or the encoder's input)
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 500
    box_batch_size_per_image: int = 128
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5  # per-class NMS of the final detections
    ap: Literal["voc07", "coco"] = "coco"  # headline score: VOC07 11-point mAP@0.5 or COCO AP50
    lr_step_at: float = 2 / 3  # fraction of the steps after which lr x0.1
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 4
    # "rpn": Faster R-CNN's region proposal network; "selective-search": Fast R-CNN's fixed
    # proposals (OpenCV's selective search, computed once per image and cached), no RPN
    proposals: Literal["rpn", "selective-search"] = "rpn"
    ss_mode: Literal["fast", "quality", "single"] = "fast"
    ss_max_proposals: int = 2000  # boxes kept per image (OpenCV's order)
    proposal_cache: str = ""  # "" = <out>/../proposal-cache, "none" = computed every time
    freeze_stages: str = ""  # encoder stages trained at lr 0, comma-separated (Fast R-CNN: conv1)
    bias_lr: float = 1.0  # lr multiplier of every bias (Fast R-CNN: 2)
    bias_decay: bool = True  # weight decay on the biases too (Fast R-CNN: none)

    def validate(self) -> None:
        super().validate()
        require_at_least(
            self,
            1,
            "max_levels",
            "roi_size",
            "fpn_channels",
            "representation_size",
            "ss_max_proposals",
        )
        if self.bias_lr < 0:
            raise ConfigError(f"config key 'bias_lr' must be >= 0, got {self.bias_lr}")
        for key in ("min_size", "max_size"):
            if getattr(self, key) is not None:
                require_at_least(self, 16, key)
        if (
            self.min_size is not None
            and self.max_size is not None
            and self.max_size < self.min_size
        ):
            raise ConfigError(
                f"config key 'max_size' ({self.max_size}) must be >= min_size ({self.min_size})"
            )
        if not 0 <= self.fc_dropout < 1:
            raise ConfigError(f"config key 'fc_dropout' must be in [0, 1), got {self.fc_dropout}")
        if not 0 < self.lr_step_at <= 1:
            raise ConfigError(f"config key 'lr_step_at' must be in (0, 1], got {self.lr_step_at}")


def _check_renamed(overrides: dict[str, Any]) -> None:
    if "fpn" in overrides:
        raise ConfigError(
            "config key 'fpn' was replaced by 'head': head=fpn (FPN over several stages) "
            "or head=c4 (one stride-16 map, Fast R-CNN's RoI pooling and fc6/fc7)"
        )


@torch.no_grad()
def select_levels(
    encoder: nn.Module, input_size: int, max_levels: int, min_stride: int = 4
) -> list[tuple[str, int, int]]:
    """(stage, channels, stride) of the last stage at each distinct stride >= `min_stride`, deepest `max_levels`."""
    was = encoder.training
    encoder.eval()
    p = next(encoder.parameters())
    feats = encoder.forward_features(torch.zeros(1, 3, input_size, input_size, device=p.device))
    encoder.train(was)
    by_stride: dict[int, tuple[str, int, int]] = {}
    for name, f in feats.items():
        if f.dim() != 4:
            continue
        stride = max(1, round(input_size / f.shape[-1]))
        by_stride[stride] = (name, f.shape[1], stride)  # later stages win
    levels = [v for s, v in sorted(by_stride.items()) if s >= min_stride] or [
        by_stride[max(by_stride)]
    ]
    return levels[-max_levels:]


class EncoderBackbone(FrozenEncoder):
    """Encoder stages -> OrderedDict of maps ("0", "1", ...), optionally through an FPN."""

    def __init__(
        self,
        encoder: nn.Module,
        levels: list[tuple[str, int, int]],
        fpn_channels: int | None,
        frozen: bool,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.levels = levels
        if frozen:
            self.freeze_encoder()
        if fpn_channels and len(levels) > 1:
            self.fpn = FeaturePyramidNetwork([c for _, c, _ in levels], fpn_channels)
            self.out_channels = fpn_channels
        else:
            self.fpn = None
            self.levels = levels[-1:]
            self.out_channels = levels[-1][1]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = stage_features(self.encoder, x, self.levels[-1][0])
        maps = OrderedDict((str(i), feats[name]) for i, (name, _, _) in enumerate(self.levels))
        return self.fpn(maps) if self.fpn is not None else maps


def stage_features(encoder: nn.Module, x: torch.Tensor, last: str) -> dict[str, torch.Tensor]:
    """`forward_features` stopped after stage `last` when the encoder uses the base class's stage
    loop (the c4 head never needs AlexNet's pool5, which a small detector image may not even
    pass through); other encoders run whole."""
    if type(encoder).forward_features is not Encoder.forward_features:
        return encoder.forward_features(x)
    out: dict[str, torch.Tensor] = {}
    for name, stage in encoder.stages.items():
        x = out[name] = stage(x)
        if name == last:
            break
    return out


@torch.no_grad()
def check_detector_size(backbone: EncoderBackbone, size: int, spec: str) -> None:
    """The backbone must run on size x size images and leave every map it uses at least 1x1."""
    was = backbone.training
    backbone.eval()
    try:
        p = next(backbone.parameters())
        maps = backbone(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    except RuntimeError as e:
        raise ConfigError(
            f"encoder {spec} cannot run on {size}x{size} detector images (min_size): "
            f"{str(e).splitlines()[0]}"
        ) from None
    finally:
        backbone.train(was)
    if any(min(m.shape[-2:]) < 1 for m in maps.values()):
        raise ConfigError(f"encoder {spec}: a feature map is empty for {size}x{size} images")


def c4_level(encoder: nn.Module, stage: str = "", max_stride: int = 16) -> tuple[str, int, int]:
    """(stage, channels, stride) of the single map the c4 head pools from.

    `stage` names it; "" picks the deepest stage whose declared stride (`feature_info` reduction)
    is <= `max_stride`: conv5 for AlexNet, whose max pool (pool5) Fast R-CNN replaces by RoI
    pooling (Girshick 2015, Sec. 2.1), the stride-16 stage of ResNets and the tiny encoders."""
    infos = list(encoder.feature_info)
    if stage:
        match = [f for f in infos if f.name == stage]
        if not match:
            raise ConfigError(
                f"config key 'roi_stage': no stage '{stage}' (stages: {', '.join(f.name for f in infos)})"
            )
        f = match[0]
    else:
        f = ([f for f in infos if f.reduction <= max_stride] or infos[:1])[-1]
    return f.name, f.channels, f.reduction


class RoIMaxPool(MultiScaleRoIAlign):
    """Fast R-CNN's RoI max pooling on one map ("0"), in place of RoIAlign (a `MultiScaleRoIAlign`
    subclass because FasterRCNN accepts no other pooler type; only `forward` differs).

    The map's scale is inferred as torchvision's pooler does: the power of two nearest to map
    height / largest image height (1/16 for AlexNet's conv5, Fast R-CNN's `spatial_scale`)."""

    def __init__(self, output_size: int) -> None:
        super().__init__(["0"], output_size, sampling_ratio=0)

    def forward(self, features, proposals, image_shapes) -> torch.Tensor:
        x = features["0"]
        scale = 2.0 ** round(math.log2(x.shape[-2] / max(h for h, _ in image_shapes)))
        return roi_pool(x, proposals, self.output_size, scale)


class FastRCNNHead(nn.Sequential):
    """fc6 and fc7 (`representation_size` wide, ReLU, dropout) over the pooled RoI, as the fully
    connected layers of AlexNet in Fast R-CNN: drawn fresh (N(0, 0.01^2), bias 0.1), or the
    encoder's trained fc6/fc7 when it carries them (`Detect.build`, `init_fc_head_`)."""

    def __init__(self, in_features: int, representation_size: int, dropout: float) -> None:
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(1),
                fc6=nn.Linear(in_features, representation_size),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Linear(representation_size, representation_size),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
            )
        )
        draw_fresh_fc_([self.fc6, self.fc7])


def detector_size(cfg: DetectConfig, input_size: int) -> tuple[int, int]:
    """(min_size, max_size) of the detector's resize: the config's, else the encoder's input."""
    lo = cfg.min_size or input_size
    return lo, cfg.max_size or lo


def anchor_sizes(
    levels: list[tuple[str, int, int]], input_size: int
) -> tuple[tuple[int, ...], ...]:
    """Two sizes per level (2x and 4x its stride; one level covers S/8 .. S/2), capped at the input."""
    if len(levels) == 1:
        s = input_size
        return ((max(4, s // 8), max(4, s // 4), max(4, s // 2)),)
    return tuple((min(2 * r, input_size), min(4 * r, input_size)) for _, _, r in levels)


def build_detector(
    encoder: nn.Module,
    num_classes: int,
    input_size: int,
    cfg: DetectConfig,
    normalize: dict[str, list[float]],
) -> FasterRCNN | FastRCNN:
    """Faster R-CNN from parts around `encoder` (its RoI heads alone, as `FastRCNN`, with
    `proposals="selective-search"`); `num_classes` excludes the background.

    Images are resized to `detector_size` (shorter side min_size, longer side <= max_size); the
    encoder, fully convolutional, runs at that size (checked here). Anchors follow that size."""
    min_size, max_size = detector_size(cfg, input_size)
    if cfg.head == "c4":
        backbone = EncoderBackbone(encoder, [c4_level(encoder, cfg.roi_stage)], None, cfg.frozen)
        roi: nn.Module = RoIMaxPool(cfg.roi_size)
        box_head: nn.Module = FastRCNNHead(
            backbone.out_channels * cfg.roi_size**2, cfg.representation_size, cfg.fc_dropout
        )
    else:
        levels = select_levels(encoder, input_size, cfg.max_levels)
        backbone = EncoderBackbone(encoder, levels, cfg.fpn_channels, cfg.frozen)
        names = [str(i) for i in range(len(backbone.levels))]
        roi = MultiScaleRoIAlign(names, output_size=cfg.roi_size, sampling_ratio=2)
        box_head = TwoMLPHead(backbone.out_channels * cfg.roi_size**2, cfg.representation_size)
    check_detector_size(backbone, min_size, cfg.encoder or "(given)")
    sizes = anchor_sizes(backbone.levels, min_size)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    detector = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        image_mean=normalize["mean"],
        image_std=normalize["std"],
        rpn_anchor_generator=anchors,
        box_roi_pool=roi,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.representation_size, num_classes + 1),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
    )
    return FastRCNN(detector) if cfg.proposals == "selective-search" else detector


class FastRCNN(nn.Module):
    """Fast R-CNN: the detector's transform, backbone and RoI heads on proposals given per image
    (selective search), no RPN. `model(images, targets, proposals=boxes)`: boxes [N_i, 4] in each
    image's own pixels, scaled here as the transform scales the image; training returns the RoI
    heads' losses (torchvision adds the ground-truth boxes to the proposals and samples
    `box_batch_size_per_image` RoIs, 25% foreground), evaluation the detections."""

    def __init__(self, detector: FasterRCNN) -> None:
        super().__init__()
        self.transform = detector.transform
        self.backbone = detector.backbone
        self.roi_heads = detector.roi_heads

    def forward(self, images, targets=None, proposals=None):
        if proposals is None:
            raise ValueError("FastRCNN needs the proposals of each image")
        sizes = [tuple(im.shape[-2:]) for im in images]
        batch, targets = self.transform(images, targets)
        boxes = [
            resize_boxes(p.to(batch.tensors.dtype), old, new)
            for p, old, new in zip(proposals, sizes, batch.image_sizes, strict=True)
        ]
        features = self.backbone(batch.tensors)
        detections, losses = self.roi_heads(features, boxes, batch.image_sizes, targets)
        if self.training:
            return losses
        return self.transform.postprocess(detections, batch.image_sizes, sizes)


def image_path(base, i: int) -> Path:
    """The file of image `i` of a VOCDetection or CocoDetection."""
    return Path(base.image_path(i)) if hasattr(base, "image_path") else Path(base.images[i])


class DetectionView(torch.utils.data.Dataset):
    """(image float[3,H,W] in [0, 1], target) with random horizontal flips for training; with a
    `ProposalCache`, target["proposals"] holds the image's selective search boxes (flipped too)."""

    def __init__(self, base, train: bool, proposals=None) -> None:
        self.base, self.train = base, train
        self.proposals = proposals
        self.classes = list(base.classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        import random

        img, t = self.base[i]
        x = TF.to_tensor(img)
        t = {k: v for k, v in t.items() if k != "masks"}
        if self.proposals is not None:
            t["proposals"] = torch.from_numpy(self.proposals.boxes(image_path(self.base, i), img))
        if self.train and random.random() < 0.5:
            x = x.flip(-1)
            for key in ("boxes", "proposals") if "proposals" in t else ("boxes",):
                b = t[key].clone()
                b[:, [0, 2]] = x.shape[-1] - t[key][:, [2, 0]]
                t[key] = b
        return x, t


def _collate(batch):
    return tuple(zip(*batch, strict=True))


def detection_splits(cfg: DetectConfig):
    """(train dataset, val dataset, coco ground truth for val, label -> category id or None)."""
    from cebench.data import CocoDetection, VOCDetection

    if cfg.coco_ann:
        if not cfg.coco_images:
            raise ConfigError(
                "--coco-ann needs --coco-images (the folder its file_name entries are relative to)"
            )
        val_ann = cfg.coco_val_ann or str(guess_coco_val(cfg.coco_ann))
        if not Path(val_ann).is_file():
            raise DatasetError(
                f"COCO evaluation annotations not found: {val_ann} (give --coco-val-ann)"
            )
        tr, va = (
            CocoDetection(cfg.coco_images, cfg.coco_ann),
            CocoDetection(cfg.coco_images, val_ann),
        )
        if tr.classes != va.classes:
            raise DatasetError(f"{cfg.coco_ann} and {val_ann} have different categories")
        return tr, va, va.coco, dict(va.label_to_cat_id), "coco"
    if not cfg.data:
        raise ConfigError("give --data (a VOC root) or --coco-ann/--coco-images")
    fmt, root = find_format(cfg.data)
    if fmt != "voc":
        raise DatasetError(
            f"--data {cfg.data}: detection needs VOC-format data (Annotations/) or COCO json"
        )
    tr, va = VOCDetection(root, cfg.train_split), VOCDetection(root, cfg.val_split)
    targets = [va.annotations[i] for i in range(len(va))]
    gt = coco_gt_from_targets(
        [
            {
                "boxes": torch.from_numpy(a.boxes),
                "labels": torch.from_numpy(a.labels),
                "difficult": torch.from_numpy(a.difficult),
                "image_id": i,
            }
            for i, a in enumerate(targets)
        ],
        [(a.height, a.width) for a in targets],
        len(va.classes),
    )
    return tr, va, gt, None, "voc"


def split_proposals(targets, device: torch.device):
    """(targets without "proposals", the proposals on `device` or None when there are none)."""
    if not targets or "proposals" not in targets[0]:
        return list(targets), None
    return [{k: v for k, v in t.items() if k != "proposals"} for t in targets], [
        t["proposals"].to(device) for t in targets
    ]


def detection_loss(model: nn.Module, batch, device: torch.device) -> torch.Tensor:
    images, targets = batch
    images = [im.to(device) for im in images]
    targets, proposals = split_proposals(targets, device)
    targets = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    if proposals is not None:
        return sum(model(images, targets, proposals=proposals).values())
    return sum(model(images, targets).values())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    evaluators: Sequence[DetectionEvaluator | VOCDetectionEvaluator],
    device: torch.device,
) -> dict[str, Any]:
    """Run the detector over `loader`, feed every evaluator, merge their summaries."""
    model.eval()
    for images, targets in loader:
        _, proposals = split_proposals(targets, device)
        images = [im.to(device) for im in images]
        outputs = model(images) if proposals is None else model(images, proposals=proposals)
        predictions = {
            int(t["image_id"]): {k: v.cpu() for k, v in o.items()}
            for t, o in zip(targets, outputs, strict=True)
        }
        for ev in evaluators:
            ev.update(predictions)
    metrics: dict[str, Any] = {}
    for ev in evaluators:
        ev.synchronize_between_processes()
        metrics.update(ev.summarize())
    return metrics


def proposal_cache(cfg: DetectConfig):
    """The `ProposalCache` of a selective-search config (None with the RPN)."""
    if cfg.proposals != "selective-search":
        return None
    from cebench.transfer.proposals import ProposalCache, default_cache_dir

    folder = (
        None
        if cfg.proposal_cache == "none"
        else Path(cfg.proposal_cache)
        if cfg.proposal_cache
        else default_cache_dir(cfg.out)
    )
    return ProposalCache(folder, cfg.ss_mode, cfg.ss_max_proposals)


def frozen_prefixes(model: nn.Module, stages: str) -> list[str]:
    """Parameter-name prefixes of the encoder stages named in `stages` (comma-separated)."""
    names = [n.strip() for n in stages.split(",") if n.strip()]
    modules = dict(model.named_modules())
    out = []
    for stage in names:
        match = [k for k in modules if k.endswith(f"encoder.stages.{stage}")]
        if not match:
            encoder = model.backbone.encoder
            have = [f.name for f in getattr(encoder, "feature_info", [])]
            raise ConfigError(
                f"config key 'freeze_stages': no encoder stage '{stage}' "
                f"(stages: {', '.join(have) or 'none named'})"
            )
        out.append(match[0] + ".")
    return out


def freeze_batchnorm_(model: nn.Module, prefixes: list[str]) -> int:
    """The BatchNorm layers under `prefixes` become torchvision's FrozenBatchNorm2d (their
    statistics and affine fixed, as in torchvision's detection backbones): lr 0 alone would leave
    a frozen stage's running statistics moving in train mode. Returns how many."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}." if name else f"{child_name}."
            if not isinstance(child, nn.BatchNorm2d) or not full.startswith(tuple(prefixes)):
                continue
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            device = child.running_mean.device if child.running_mean is not None else None
            setattr(module, child_name, frozen.to(device) if device is not None else frozen)
            count += 1
    return count


class Detect(Harness):
    """Faster R-CNN on the encoder (see the module docstring); `run = Detect().run`."""

    task = "detect"

    def load_data(self, cfg: DetectConfig) -> Splits:
        tr, va, coco_gt, label_to_cat, fmt = detection_splits(cfg)
        return Splits(tr, va, fmt, {"coco_gt": coco_gt, "label_to_cat": label_to_cat})

    def calibration(self, cfg: DetectConfig, data: Splits):
        from cebench.transfer.data import ResizedImages

        return lambda size: calibration_batch(
            ResizedImages(data.train, size), cfg.calibration_images, cfg.seed
        )

    def rescale(self, cfg: DetectConfig) -> str:
        # with the c4 head, fc6/fc7 are rescaled together with the encoder: done in build
        return "none" if cfg.head == "c4" else cfg.rescale

    def build(self, cfg: DetectConfig, encoder, info, data: Splits, device) -> nn.Module:
        model = build_detector(
            encoder, len(data.train.classes), info.input_size, cfg, info.normalize
        ).to(device)
        if cfg.head == "c4":  # calibrated as the classification net: the whole image as one RoI
            head, stage = model.roi_heads.box_head, model.backbone.levels[-1][0]

            def forward(x: torch.Tensor) -> torch.Tensor:
                f = stage_features(encoder, x, stage)[stage]
                return head(nn.functional.adaptive_max_pool2d(f, cfg.roi_size))

            init_fc_head_(
                model,
                encoder,
                info,
                [head.fc6, head.fc7],
                forward,
                cfg.rescale,
                cfg.seed,
                self.calibration(cfg, data),
                cfg.keep_trained_fc,
            )
        return model

    def fit(self, cfg: DetectConfig, model: nn.Module, data: Splits, info, device, log) -> None:
        params: Any = model.parameters()
        if cfg.freeze_stages or cfg.bias_lr != 1.0 or not cfg.bias_decay:
            frozen = frozen_prefixes(model, cfg.freeze_stages)
            freeze_batchnorm_(model, frozen)  # a frozen stage's statistics stay as they are too
            params = param_groups(
                model,
                cfg.weight_decay,
                bias_lr=cfg.bias_lr,
                bias_decay=cfg.bias_decay,
                frozen=frozen,
            )
        opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        loader = seeded_loader(
            DetectionView(data.train, True, proposal_cache(cfg)),
            cfg.batch_size,
            True,
            cfg.seed,
            cfg.num_workers,
            _collate,
        )
        steps = cfg.epochs * len(loader)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, [max(1, int(cfg.lr_step_at * steps))], 0.1
        )
        train_epochs(model, loader, detection_loss, opt, device, sched, cfg.epochs, log)

    def evaluate(
        self, cfg: DetectConfig, model: nn.Module, data: Splits, info, device
    ) -> dict[str, Any]:
        val_loader = seeded_loader(
            DetectionView(data.val, False, proposal_cache(cfg)),
            cfg.batch_size,
            False,
            cfg.seed,
            cfg.num_workers,
            _collate,
        )
        coco_gt, label_to_cat = data.extra["coco_gt"], data.extra["label_to_cat"]
        evaluators = [
            DetectionEvaluator(coco_gt, label_to_cat),
            VOCDetectionEvaluator.from_coco(coco_gt, label_to_cat),
        ]
        metrics = evaluate(model, val_loader, evaluators, device)
        classes = data.train.classes
        if data.format == "voc":  # name the per-class entries after the dataset's classes
            for key in ("per_class_AP", "per_class_AP50", "per_class_AP_voc07"):
                metrics[key] = {classes[int(k) - 1]: v for k, v in metrics[key].items()}
        min_size, max_size = detector_size(cfg, info.input_size)
        metrics.update(
            score=metrics["mAP_voc07"] if cfg.ap == "voc07" else metrics["AP50"],
            score_metric="mAP_voc07" if cfg.ap == "voc07" else "AP50",
            image_size=[min_size, max_size],
            format=data.format,
            train_images=len(data.train),
            val_images=len(data.val),
            levels=[name for name, _, _ in model.backbone.levels],
            proposals=cfg.proposals,
        )
        return metrics

    def checkpoint(self, cfg: DetectConfig, model: nn.Module, data: Splits, info) -> dict[str, Any]:
        return {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "classes": list(data.train.classes),
        }


def run(cfg: DetectConfig, note: str | None = None) -> dict[str, Any]:
    """Train and evaluate one detector; writes metrics.json, log.jsonl and model.pt under cfg.out."""
    return Detect().run(cfg, note)


TASK = register_task(
    TransferTask(
        name="detect",
        module=__name__,
        config=DetectConfig,
        summary="Faster R-CNN on the encoder (FPN or Fast R-CNN-style c4 head); VOC07 mAP, COCO AP",
        options=(
            Option(
                "--coco-ann", "coco_ann", help="COCO json of the training set (instead of --data)"
            ),
            Option(
                "--coco-images",
                "coco_images",
                help="folder the COCO file_name entries are relative to",
            ),
            Option(
                "--coco-val-ann",
                "coco_val_ann",
                help="COCO json to evaluate on (default: --coco-ann with train -> val)",
            ),
            Option(
                "--head",
                "head",
                choices=["fpn", "c4"],
                help="fpn: FPN over several stages; c4: Fast R-CNN on one stride-16 map (paper preset)",
            ),
            Option(
                "--proposals",
                "proposals",
                choices=["rpn", "selective-search"],
                help="selective-search: Fast R-CNN's fixed boxes, computed once per image and cached "
                "(paper preset); rpn: Faster R-CNN's region proposal network (small preset)",
            ),
        ),
        settings=(
            "encoder",
            "data",
            ("train_split", "train"),
            ("val_split", "test"),
            ("input_size", "size"),
            "min_size",
            "max_size",
            "frozen",
            "head",
            ("representation_size", "fc_dims"),
            "fc_dropout",
            "ap",
            "proposals",
            ("freeze_stages", "lr0"),
            "bias_lr",
            "bias_decay",
            "rescale",
            "keep_trained_fc",
            ("optimizer", "optim"),
            "lr",
            "epochs",
            ("batch_size", "batch"),
        ),
        metrics=("score", "mAP_voc07", "AP50"),  # `score`: the one `ap` names
        report=lambda m, cfg: [
            f"detect: VOC07 mAP {m['mAP_voc07']:.2f} AP {m['AP']:.2f} AP50 {m['AP50']:.2f} "
            f"AP75 {m['AP75']:.2f} -> {cfg.out}/metrics.json",
            per_class_table(m["per_class_AP_voc07"], "AP (VOC07, %)"),
        ],
        check_keys=_check_renamed,
    )
)
