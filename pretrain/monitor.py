"""An online probe while pretraining: kNN top-1 of the encoder's features on a small labelled set.

    cebench pretrain --data data/builtin/unlabelled --out runs/ce \\
        monitor.data=data/builtin/imagefolder/val monitor.every=200 monitor.images=300

Every `monitor.every` steps (and at the last step) the encoder embeds `monitor.images` images of
the ImageFolder tree `monitor.data` (class subfolders; a fixed subset taken round-robin over the
classes, preprocessed as the training images but centre-cropped and not flipped, loaded once) and
the leave-one-out weighted kNN top-1 (%) of that set is logged as `knn_top1` with the losses
(metrics.jsonl, TensorBoard; `cebench table` plots it as figures/pretrain_probe.png). The features
are the last stage (or `monitor.layer`) globally average-pooled; the kNN is the one of the
classification harness (cosine similarity, k neighbours weighted by exp(sim / T); Wu et al.,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018: k=200,
T=0.07, here k=20 for a few hundred images), as lightly's kNN monitor and solo-learn's online
evaluation do.

The probe never changes training: it runs under `torch.no_grad()` with the encoder in eval mode
(BatchNorm statistics untouched; every module's own train/eval mode restored afterwards), draws
no random numbers, and only process 0 runs it, so the weights after N steps are the same with and
without it (tests/test_monitor.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.errors import ConfigError


@dataclass
class MonitorConfig:
    data: str = ""  # labelled ImageFolder tree (class subfolders); empty = no online probe
    every: int = 200  # steps between probes (and one at the last step)
    images: int = 300  # at most this many images of `data`, taken round-robin over the classes
    k: int = 20  # neighbours
    temperature: float = 0.07  # kNN weights exp(similarity / temperature)
    layer: str = ""  # encoder stage (a forward_features key); empty = the last
    batch_size: int = 128  # images per forward pass

    def validate(self) -> None:
        for name in ("every", "k", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"monitor.{name} must be >= 1, got {getattr(self, name)}")
        if self.images < 2:
            raise ConfigError(f"monitor.images must be >= 2, got {self.images}")
        if self.temperature <= 0:
            raise ConfigError(f"monitor.temperature must be > 0, got {self.temperature}")


def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    leave_one_out: bool = False,
) -> torch.Tensor:
    """Weighted kNN class scores (cosine similarity, weights exp(sim / T)). With `leave_one_out`
    the test set is the training set and no image is its own neighbour."""
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    sim = b @ a.T
    if leave_one_out:
        sim.fill_diagonal_(float("-inf"))
    k = min(k, len(train_x) - (1 if leave_one_out else 0))
    top, idx = sim.topk(k, dim=1)
    w = (top / temperature).exp()
    if train_y.dim() == 1:
        votes = F.one_hot(train_y[idx], num_classes).float()
    else:
        votes = (train_y[idx] != 0).float()  # difficult-only (-1) still means the object is there
    return (w.unsqueeze(-1) * votes).sum(1) / w.sum(1, keepdim=True)


def round_robin(labels: list[int], n: int) -> list[int]:
    """Indices of at most `n` items taken one per class in turn (each class in its own order)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    for depth in range(max(map(len, queues))):
        out += [q[depth] for q in queues if depth < len(q)]
    return out[:n]


class OnlineProbe:
    """`probe(encoder, step)` -> {"knn_top1": ...} when `step` is a probe step, else {}."""

    def __init__(self, cfg: MonitorConfig, input_size: int, load_size: int, last_step: int):
        self.cfg, self.input_size, self.load_size = cfg, input_size, load_size
        self.last_step = last_step
        self.images: torch.Tensor | None = None
        self.labels = torch.empty(0, dtype=torch.long)
        self.num_classes = 0

    def due(self, step: int) -> bool:
        return step % self.cfg.every == 0 or step == self.last_step

    def load(self, encoder: nn.Module, fmt: torch.memory_format = torch.contiguous_format) -> None:
        """The labelled images, once (as the training images, centre crop, no flip); a bad
        folder or `monitor.layer` is a ConfigError/DatasetError here, before training."""
        from cebench.data import ImageFolderDataset
        from cebench.pretrain.train_data import TrainImages

        folder = ImageFolderDataset(self.cfg.data)
        keep = round_robin(folder.targets, self.cfg.images)
        if len({folder.targets[i] for i in keep}) < 2:
            raise ConfigError(
                f"monitor.data={self.cfg.data}: the online probe needs at least 2 classes"
            )
        ds = TrainImages(
            [folder.samples[i][0] for i in keep],
            [folder.targets[i] for i in keep],
            size=self.input_size,
            load_size=self.load_size,
            crop="center",
            flip=False,
        )
        self.images = torch.stack([ds[(i, 0)][0] for i in range(len(ds))])
        self.labels = torch.tensor([folder.targets[i] for i in keep])
        self.num_classes = len(folder.classes)
        saved, self.images = self.images, self.images[:1]
        try:
            self.features(encoder, fmt)  # checks the layer
        finally:
            self.images = saved

    @torch.no_grad()
    def features(self, encoder: nn.Module, fmt: torch.memory_format) -> torch.Tensor:
        """Globally average-pooled features of the probe images, the encoder in eval mode."""
        assert self.images is not None
        device = next(encoder.parameters()).device
        modes = [(m, m.training) for m in encoder.modules()]
        encoder.eval()
        try:
            out = []
            for batch in self.images.split(self.cfg.batch_size):
                maps = encoder.forward_features(batch.to(device).contiguous(memory_format=fmt))
                layer = self.cfg.layer or list(maps)[-1]
                if layer not in maps:
                    raise ConfigError(
                        f"monitor.layer={layer}: the encoder's stages are {', '.join(maps)}"
                    )
                x = maps[layer].float()
                out.append((x.mean(dim=(-2, -1)) if x.dim() == 4 else x.flatten(1)).cpu())
        finally:
            for m, mode in modes:
                m.training = mode
        return torch.cat(out)

    def __call__(
        self, encoder: nn.Module, step: int, fmt: torch.memory_format = torch.contiguous_format
    ) -> dict[str, Any]:
        if not self.due(step):
            return {}
        if self.images is None:
            self.load(encoder, fmt)
        x = self.features(encoder, fmt)
        scores = knn_scores(
            x, self.labels, x, self.num_classes, self.cfg.k, self.cfg.temperature, True
        )
        top1 = (scores.argmax(1) == self.labels).float().mean().item() * 100
        return {"knn_top1": round(top1, 4)}
