"""Image classification transfer: linear probe per layer, kNN, or full fine-tuning.

    cebench transfer classify --encoder runs/ce/encoder.pt --data data/VOCdevkit/VOC2007 --out runs/cls   # the paper's protocol
    cebench transfer classify --encoder runs/ce/encoder.pt --data data/builtin/VOC --protocol linear --preset small --out runs/lin
    cebench transfer classify --encoder random:tiny --data data/builtin/imagefolder --protocol knn --preset small --out runs/knn

    from cebench.transfer.classify import run
    from cebench.transfer.tasks import preset_config
    cfg = preset_config("classify", "small", encoder="runs/ce", data="data/builtin/VOC", out="runs/cls")  # presets/classify/small.yaml
    result = run(cfg)
    result["metrics"]["score"]     # mAP (VOC data) or top-1 (ImageFolder data), in percent

Protocols (what is trained, defaults = `ClassifyConfig`):
- "finetune" (the paper's classification column): encoder + a new head, everything trained (the
  encoder stays frozen with `frozen=True`). Defaults: a linear head on the globally average-pooled
  last stage, SGD momentum 0.9, lr 0.001, weight decay 5e-4, batch 32, 60 epochs, lr x0.1 at 2/3,
  images resized to the input size, random flips, one test view.
  The paper preset (`transfer/presets/classify/paper.yaml`) is Krähenbühl et al.'s VOC 2007 protocol (ICLR 2016, arXiv 1511.06856), which
  Pathak et al. (CVPR 2016) follow: `rescale="full"` (their data-dependent within- and
  between-layer rescaling, here of the encoder and the new fc6/fc7 together, on
  `calibration_images` training images), `head="fc"` (pool5 flattened -> fc6, fc7 of 4096
  with ReLU and dropout 0.5, fresh or the encoder's trained ones -> a fresh fc8), training images
  resized to 256/227 of the input, scaled by a random 0.5-2x, randomly cropped and flipped, 10
  random test crops drawn the same way (logits averaged), VOC 2007 11-point AP as the score,
  trainval -> test; SGD momentum 0.9, lr 0.001 halved every 1/8 of training (biases 2x),
  gradients clipped at 10, batch 16, weight decay 1e-6, 255 epochs (about 80,000 iterations):
  the schedule of their released evaluation code (philkr/voc-classification).
- "linear": the encoder frozen; per stage, features average-pooled to <= 9216 dims (see
  `cebench.transfer.features`), standardised with training statistics, and a linear classifier trained on
  the cached features with Adam (lr 1e-3, weight decay 5e-4, batch 256, 100 epochs): the
  layer-wise linear-probe protocol of Zhang et al. (CVPR 2017), one classifier per layer.
- "knn": the encoder frozen; cosine similarity on the same pooled features (L2-normalised),
  k = 20 neighbours voting with weight exp(sim / 0.07) (Wu et al., CVPR 2018, as in DINO).
`head`, `random_crop`, `test_crops` and the lr steps concern "finetune" only; `rescale` applies to
every protocol (the frozen features are then those of the rescaled encoder).
Metrics: top-1 (%) for single-label ImageFolder data; for multi-label VOC data both mAPs (%):
`mAP_area` (per-class scikit-learn average precision) and `mAP_voc07` (the VOC 2007 devkit's
11-point interpolated AP), with per-class lists; `ap` picks the one reported as `score` / `mAP`.
Images with only difficult objects of a class are left out of that class; the mean is over
classes with a positive. Low-shot: `shots` labelled images per class or a `label_fraction` of
the training set (the evaluation set is always whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.errors import ConfigError
from cebench.core.lock import prepare_out_dir
from cebench.core.logger import MetricLogger
from cebench.pretrain.monitor import knn_scores  # one kNN: the online probe's and this
from cebench.transfer.args import (
    HarnessConfig,
    require_at_least,
)
from cebench.transfer.data import (
    ClassificationView,
    calibration_batch,
    classification_splits,
    files_fingerprint,
    find_format,
    low_shot_indices,
    seeded_loader,
)
from cebench.transfer.encoders import (
    MINUS_ONE_ONE,
    init_fc_head_,
)
from cebench.transfer.features import default_cache_dir, extract_features
from cebench.transfer.harness import FrozenEncoder, Harness, Splits
from cebench.transfer.loop import bias_lr_groups, make_optimizer, train_epochs, train_one_epoch
from cebench.transfer.metrics import top1, voc07_mean_ap, voc_mean_ap
from cebench.transfer.tasks import Option, TransferTask, register_task


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


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    cfg: ClassifyConfig,
    log: MetricLogger | None = None,
    layer: str = "",
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Linear classifier on standardised features; returns (head, mean, std) for evaluation."""
    mean, std = (
        train_x.mean(0),
        train_x.std(0).clamp(min=1e-6) if len(train_x) > 1 else torch.ones(train_x.shape[1]),
    )
    x = (train_x - mean) / std
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = make_optimizer(
        head.parameters(), "adam", cfg.probe_lr, weight_decay=cfg.probe_weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.probe_epochs):
        order = torch.randperm(len(x), generator=gen)
        batches = [(x[i], train_y[i]) for i in order.split(cfg.probe_batch_size)]
        stats = train_one_epoch(
            head, batches, lambda m, b, _d: classification_loss(m(b[0]), b[1]), opt, x.device
        )
        if log is not None and (epoch + 1) % 10 == 0:
            log.update(epoch + 1, layer=layer, loss=stats["loss"])
    return head, mean, std


def _frozen_protocol(
    cfg, encoder, info, train, val, device, log
) -> tuple[dict[str, Any], dict[str, Any]]:
    layers = cfg.layers or list(encoder.feature_names)
    unknown = [name for name in layers if name not in encoder.feature_names]
    if unknown:
        raise ConfigError(
            f"layer '{unknown[0]}' is not a stage of {info.name}; stages: {', '.join(encoder.feature_names)}"
        )
    cache = feature_cache_dir(cfg)
    feats, hits = {}, {}
    for name, view in (("train", train), ("val", val)):
        key = {
            "encoder": info.hash,
            "data": files_fingerprint(view.image_paths(), str(view.classes)),
            "split": name,
            "input_size": view.size,
            "normalize": info.normalize,
        }
        loader = seeded_loader(view, 64, False, cfg.seed, cfg.num_workers)
        feats[name] = extract_features(encoder, loader, layers, key, cache, cfg.probe_dims, device)
        hits[name] = feats[name][2]
    (trx, try_, _), (vax, vay, _) = feats["train"], feats["val"]
    keep = low_shot_indices(try_, cfg.shots, cfg.label_fraction, cfg.seed)
    num_classes = len(train.classes)
    per_layer: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    for name in layers:
        x, y = trx[name][keep], try_[keep]
        if cfg.protocol == "linear":
            head, mean, std = train_linear_probe(x, y, num_classes, cfg, log, name)
            with torch.no_grad():
                s = head((vax[name] - mean) / std)
            heads[name] = {"state_dict": head.state_dict(), "mean": mean, "std": std}
        else:
            s = knn_scores(x, y, vax[name], num_classes, cfg.knn_k, cfg.knn_temperature)
        per_layer[name] = score(
            s.softmax(1) if y.dim() == 1 and cfg.protocol == "linear" else s, vay, cfg.ap
        )
    main = per_layer[layers[-1]]
    metrics = {
        "score": main.get("mAP", main.get("top1")),
        "layer": layers[-1],
        "per_layer": per_layer,
        "train_images": len(keep),
        "val_images": len(vay),
        "cache_hits": {s: all(h.values()) for s, h in hits.items()},
    }
    return metrics, {"protocol": cfg.protocol, "layers": layers, "heads": heads}


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


class Classify(Harness):
    """Linear probe, kNN or fine-tuning (see the module docstring); `run = Classify().run`.

    For the frozen protocols the "model" is the probed encoder: `fit` extracts (cached) features
    and trains one probe per layer, `evaluate` reports their scores."""

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

    def rescale(self, cfg: ClassifyConfig) -> str:
        # with the fc head, the rescaling covers the new fc6/fc7 too: done in build
        return "none" if cfg.protocol == "finetune" and cfg.head == "fc" else cfg.rescale

    def log_total(self, cfg: ClassifyConfig) -> int | None:
        return None

    def describe(self, cfg: ClassifyConfig) -> str:
        return f"classify/{cfg.protocol}"

    def build(self, cfg: ClassifyConfig, encoder, info, data: Splits, device) -> dict[str, Any]:
        for view in (data.train, data.val):
            view.size, view.normalize = info.input_size, info.normalize
        if cfg.protocol != "finetune":
            return {"encoder": encoder}
        calibration = self.calibration(cfg, data)
        return {
            "net": build_finetune_model(
                cfg, encoder, info, data.train, data.val, device, calibration
            )
        }

    def fit(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device, log
    ) -> None:
        if "net" in model:
            finetune(cfg, model["net"], data.train, device, log)
        else:
            model["metrics"], model["probes"] = _frozen_protocol(
                cfg, model["encoder"], info, data.train, data.val, device, log
            )

    def evaluate(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device
    ) -> dict[str, Any]:
        if "net" in model:
            metrics = evaluate_finetuned(cfg, model["net"], data.train, data.val, device)
        else:
            metrics = model["metrics"]
        return {**metrics, "format": data.format}

    def checkpoint(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info
    ) -> dict[str, Any]:
        if "net" in model:
            weights = {k: v.cpu() for k, v in model["net"].state_dict().items()}
            saved: dict[str, Any] = {"protocol": "finetune", "state_dict": weights}
        else:
            saved = model["probes"]
        return {**saved, "classes": data.train.classes}


def feature_cache_dir(cfg: ClassifyConfig) -> Path | None:
    """Where the frozen protocols cache features (None: no cache)."""
    if cfg.cache_dir == "none":
        return None
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.out)


def run(cfg: ClassifyConfig, note: str | None = None) -> dict[str, Any]:
    """Run one classification transfer job; writes metrics.json, log.jsonl, model.pt under cfg.out."""
    cache = feature_cache_dir(cfg) if cfg.protocol != "finetune" else None
    if cache is not None:  # a file in the way, an unwritable folder, the data: one line, first
        prepare_out_dir(cache, "--cache-dir", inputs={"--data": cfg.data})
    return Classify().run(cfg, note)


TASK = register_task(
    TransferTask(
        name="classify",
        module=__name__,
        config=ClassifyConfig,
        summary="linear probe per layer, kNN or fine-tuning; top-1 or VOC mAP",
        options=(
            Option(
                "--protocol",
                "protocol",
                choices=["linear", "knn", "finetune"],
                help="default: finetune",
            ),
            Option(
                "--layers",
                "layers",
                lambda v: [s for s in v.split(",") if s] or None,
                help="linear/knn: comma-separated stages (default: all)",
            ),
            Option("--shots", "shots", type=int, help="labelled training images per class"),
            Option(
                "--label-fraction",
                "label_fraction",
                type=float,
                help="fraction of the training labels used",
            ),
            Option("--k", "knn_k", type=int, help="kNN neighbours (default 20)"),
            Option(
                "--cache-dir",
                "cache_dir",
                help="feature cache (default <out>/../feature-cache; 'none' disables)",
            ),
        ),
        report=lambda m, cfg: [
            f"classify/{cfg.protocol}: score {m['score']:.2f} "
            f"({'mAP' if m['format'] == 'voc' else 'top-1'}) -> {cfg.out}/metrics.json"
        ],
    )
)
