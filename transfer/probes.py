"""The classification task's frozen-encoder harness (`protocol: linear` or `knn`): features of
each probed stage extracted once (and cached), then a linear classifier per stage or kNN. See
transfer/classify.py for the protocols.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.core.logger import MetricLogger
from cebench.pretrain.monitor import knn_scores  # one kNN: the online probe's and this
from cebench.transfer.classify_common import (
    ClassifyConfig,
    ClassifyHarness,
    classification_loss,
    score,
)
from cebench.transfer.data import files_fingerprint, low_shot_indices, seeded_loader
from cebench.transfer.features import default_cache_dir, extract_features
from cebench.transfer.harness import Splits
from cebench.transfer.loop import make_optimizer, train_one_epoch


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


def feature_cache_dir(cfg: ClassifyConfig) -> Path | None:
    """Where the frozen protocols cache features (None: no cache)."""
    if cfg.cache_dir == "none":
        return None
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.out)


class Probes(ClassifyHarness):
    """Linear probes or kNN on the frozen encoder: the "model" is the probed encoder; `fit`
    extracts (cached) features and trains one probe per layer, `evaluate` reports their scores."""

    def build(self, cfg: ClassifyConfig, encoder, info, data: Splits, device) -> dict[str, Any]:
        self.set_views(data, info)
        return {"encoder": encoder}

    def fit(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device, log
    ) -> None:
        model["metrics"], model["probes"] = _frozen_protocol(
            cfg, model["encoder"], info, data.train, data.val, device, log
        )

    def evaluate(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info, device
    ) -> dict[str, Any]:
        return {**model["metrics"], "format": data.format}

    def checkpoint(
        self, cfg: ClassifyConfig, model: dict[str, Any], data: Splits, info
    ) -> dict[str, Any]:
        return {**model["probes"], "classes": data.train.classes}
