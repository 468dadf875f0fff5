"""Image classification transfer: linear probe per layer, kNN, or full fine-tuning.

    cebench transfer classify --encoder runs/ce/encoder.pt --data data/builtin/VOC --protocol linear --out runs/cls
    cebench transfer classify --encoder random:tiny --data data/builtin/imagefolder --protocol knn --preset small --out runs/knn

    from cebench.transfer.classify import ClassifyConfig, run, small_preset
    result = run(small_preset(encoder="runs/ce", data="data/builtin/VOC", out="runs/cls"))
    result["metrics"]["score"]     # mAP (VOC data) or top-1 (ImageFolder data), in percent

Protocols (what is trained, defaults = `ClassifyConfig`):
- "finetune" (the paper's classification column): encoder + a new linear head on the globally
  average-pooled last stage, everything trained (the encoder stays frozen with `frozen=True`), SGD
  momentum 0.9, lr 0.001, weight decay 5e-4, batch 32, 60 epochs, step decay x0.1 at 2/3, random
  flips; in the spirit of the Krähenbühl et al. (2016) VOC2007 fine-tuning protocol the paper uses
  (their exact iteration counts and crops are not reproduced).
- "linear": the encoder frozen; per stage, features average-pooled to <= 9216 dims (see
  `cebench.transfer.features`), standardised with training statistics, and a linear classifier trained on
  the cached features with Adam (lr 1e-3, weight decay 5e-4, batch 256, 100 epochs): the
  layer-wise linear-probe protocol of Zhang et al. (CVPR 2017), one classifier per layer.
- "knn": the encoder frozen; cosine similarity on the same pooled features (L2-normalised),
  k = 20 neighbours voting with weight exp(sim / 0.07) (Wu et al., CVPR 2018, as in DINO).
Metrics: top-1 (%) for single-label ImageFolder data; VOC mAP (%) for multi-label VOC data
(per-class scikit-learn average precision, images with only difficult objects of a class left
out of that class, mean over classes). Low-shot: `shots` labelled images per class or a
`label_fraction` of the training set (the evaluation set is always whole).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.config import validate
from cebench.core.device import pick_device
from cebench.core.errors import ConfigError
from cebench.core.io import atomic_save
from cebench.core.logger import MetricLogger
from cebench.transfer.args import (
    HarnessConfig,
    common_parser,
    config_from_args,
    replace_validated,
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
from cebench.transfer.encoders import MINUS_ONE_ONE, resolve_encoder
from cebench.transfer.features import default_cache_dir, extract_features
from cebench.transfer.loop import freeze, make_optimizer, set_seed, train_one_epoch, write_run
from cebench.transfer.metrics import top1, voc_mean_ap


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
    shots: int | None = None
    label_fraction: float | None = None
    cache_dir: str | None = None  # None: <out>/../feature-cache; "none": no cache

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 1, "probe_epochs", "probe_batch_size", "knn_k", "probe_dims")
        if self.probe_lr <= 0:
            raise ConfigError(f"config key 'probe_lr' must be > 0, got {self.probe_lr}")


def paper_preset(**overrides: Any) -> ClassifyConfig:
    """The protocol's defaults (`ClassifyConfig()`) with `overrides`."""
    return replace_validated(ClassifyConfig(), **overrides)


def small_preset(**overrides: Any) -> ClassifyConfig:
    """Settings for the built-in 64 px data (a few hundred images): seconds on a CPU."""
    cfg = ClassifyConfig(
        epochs=6,
        lr=1e-3,
        optimizer="adam",
        batch_size=32,
        probe_dims=2048,
        probe_epochs=60,
        probe_batch_size=128,
        knn_k=10,
    )
    return replace_validated(cfg, **overrides)


class FinetuneModel(nn.Module):
    """Encoder -> global average pool of the last stage -> linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        return self.head(f.mean((2, 3)) if f.dim() == 4 else f)


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (class indices) or BCE over the non-ignored (target >= 0) labels."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    keep = target >= 0
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep])


def score(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    if targets.dim() == 1:
        return {"top1": top1(scores, targets)}
    m, per_class = voc_mean_ap(scores.numpy(), targets.numpy())
    return {"mAP": m, "per_class_AP": per_class}


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


def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """Weighted kNN class scores (cosine similarity, weights exp(sim / T))."""
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    sim = b @ a.T
    k = min(k, len(train_x))
    top, idx = sim.topk(k, dim=1)
    w = (top / temperature).exp()
    if train_y.dim() == 1:
        votes = F.one_hot(train_y[idx], num_classes).float()
    else:
        votes = (train_y[idx] != 0).float()  # difficult-only (-1) still means the object is there
    return (w.unsqueeze(-1) * votes).sum(1) / w.sum(1, keepdim=True)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = common_parser(
        add_help,
        description="Classification transfer: linear probe per layer, kNN or fine-tuning.",
        epilog=__doc__.split("Protocols")[0],
    )
    p.add_argument(
        "--protocol", choices=["linear", "knn", "finetune"], default=None, help="default: finetune"
    )
    p.add_argument(
        "--layers", default=None, help="linear/knn: comma-separated stages (default: all)"
    )
    p.add_argument("--shots", type=int, default=None, help="labelled training images per class")
    p.add_argument(
        "--label-fraction", type=float, default=None, help="fraction of the training labels used"
    )
    p.add_argument("--k", type=int, default=None, help="kNN neighbours (default 20)")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache (default <out>/../feature-cache; 'none' disables)",
    )
    return p


def main(args: argparse.Namespace) -> int:
    extra = {
        "protocol": args.protocol,
        "shots": args.shots,
        "label_fraction": args.label_fraction,
        "knn_k": args.k,
        "cache_dir": args.cache_dir,
        "layers": [s for s in args.layers.split(",") if s] if args.layers else None,
    }
    cfg = config_from_args(paper_preset if args.preset == "paper" else small_preset, args, extra)
    m = run(cfg)["metrics"]
    print(
        f"classify/{cfg.protocol}: score {m['score']:.2f} ({'mAP' if m['format'] == 'voc' else 'top-1'}) -> {cfg.out}/metrics.json"
    )
    return 0


def _frozen_protocol(
    cfg, encoder, info, train, val, device, log
) -> tuple[dict[str, Any], dict[str, Any]]:
    layers = cfg.layers or list(encoder.feature_names)
    unknown = [name for name in layers if name not in encoder.feature_names]
    if unknown:
        raise ConfigError(
            f"layer '{unknown[0]}' is not a stage of {info['name']}; stages: {', '.join(encoder.feature_names)}"
        )
    cache = (
        None
        if cfg.cache_dir == "none"
        else Path(cfg.cache_dir)
        if cfg.cache_dir
        else default_cache_dir(cfg.out)
    )
    feats, hits = {}, {}
    for name, view in (("train", train), ("val", val)):
        key = {
            "encoder": info["hash"],
            "data": files_fingerprint(view.image_paths(), str(view.classes)),
            "split": name,
            "input_size": view.size,
            "normalize": info["normalize"],
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
            s.softmax(1) if y.dim() == 1 and cfg.protocol == "linear" else s, vay
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
def _predict(model: nn.Module, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    scores, targets = [], []
    for x, y in loader:
        logits = model(x.to(device)).float().cpu()
        scores.append(logits.softmax(1) if y.dim() == 1 else logits.sigmoid())
        targets.append(y)
    return torch.cat(scores), torch.cat(targets)


def _finetune(cfg, encoder, train, val, device, log) -> tuple[dict[str, Any], dict[str, Any]]:
    keep = low_shot_indices(train.targets(), cfg.shots, cfg.label_fraction, cfg.seed)
    train.indices = [train.indices[i] for i in keep]
    model = FinetuneModel(encoder, len(train.classes)).to(device)
    if cfg.frozen:
        freeze(model.encoder)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = seeded_loader(train, cfg.batch_size, True, cfg.seed, cfg.num_workers)
    steps = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, (2 * steps) // 3)], 0.1)

    def loss_fn(m: nn.Module, batch, dev) -> torch.Tensor:
        return classification_loss(m(batch[0].to(dev)), batch[1].to(dev))

    for epoch in range(cfg.epochs):
        model.train()
        if cfg.frozen:
            model.encoder.eval()
        stats = train_one_epoch(model, loader, loss_fn, opt, device, sched)
        log.update(epoch + 1, loss=stats["loss"], lr=opt.param_groups[0]["lr"])
    s, y = _predict(model, seeded_loader(val, 64, False, cfg.seed, cfg.num_workers), device)
    m = score(s, y)
    metrics = {
        "score": m.get("mAP", m.get("top1")),
        **m,
        "train_images": len(train),
        "val_images": len(val),
    }
    return metrics, {
        "protocol": "finetune",
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
    }


def run(cfg: ClassifyConfig) -> dict[str, Any]:
    """Run one classification transfer job; writes metrics.json, log.jsonl, model.pt under cfg.out."""
    validate(cfg)
    if not cfg.out:
        raise ConfigError("config key 'out' (--out) is required")
    start = time.time()
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    fmt, root = find_format(cfg.data)
    out = Path(cfg.out)
    train, val = classification_splits(root, fmt, cfg.train_split, cfg.val_split, 0, MINUS_ONE_ONE)

    def calibration(size: int) -> torch.Tensor:
        view = ClassificationView(train.base, size, MINUS_ONE_ONE, False)
        return calibration_batch(view, cfg.calibration_images, cfg.seed)

    encoder, info = resolve_encoder(cfg.encoder, cfg.input_size, calibration, cfg.seed)
    for view in (train, val):
        view.size, view.normalize = info["input_size"], info["normalize"]
    set_seed(cfg.seed)
    log = MetricLogger(out / "log.jsonl", total=None, desc=f"classify/{cfg.protocol}")
    try:
        if cfg.protocol == "finetune":
            metrics, model = _finetune(cfg, encoder.to(device), train, val, device, log)
        else:
            metrics, model = _frozen_protocol(cfg, encoder, info, train, val, device, log)
    finally:
        log.close()
    metrics["format"] = fmt
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(
        {"task": "classify", **model, "classes": train.classes, "encoder": info["spec"]},
        out / "model.pt",
    )
    return write_run(out, "classify", metrics, cfg, info, device, start)
