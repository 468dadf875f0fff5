"""The method interface and its registry; the Trainer drives any registered method the same way.

A method owns its networks and optimizers (by name, so checkpoints hold `models[name]` and
`optims[name]`), its step and its sample grid; the Trainer owns the run's life: data order,
signals, checkpoints, logging and encoder.pt.

A step returns metric values as detached 0-d tensors (no device sync per step); the caller stacks
them and copies them to the host once per log interval. Under several processes every value is the
process's share such that the *mean over processes* is the value of the whole global batch, and
gradients are averaged over processes (`cebench.core.distributed.average_gradients`), so N processes
x batch b follow the same trajectory as 1 process x batch N*b.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from cebench.core import distributed as D
from cebench.core.config import from_dict
from cebench.core.errors import ConfigError

_METHODS: dict[str, type[PretrainMethod]] = {}


def register_method(name: str) -> Callable[[type[PretrainMethod]], type[PretrainMethod]]:
    """Class decorator: add a method under `name` (a duplicate name is refused)."""

    def wrap(cls: type[PretrainMethod]) -> type[PretrainMethod]:
        if name in _METHODS:
            raise ValueError(f"pretraining method '{name}' is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type[PretrainMethod]:
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'; methods: {', '.join(list_methods())}")
    return _METHODS[name]


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on the device when enabled (no GradScaler needed for bf16)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class PretrainMethod:
    """One pretraining method (see the package docstring). Subclasses set the class attributes
    and implement `build`, `step` and `encoder`."""

    name: ClassVar[str] = ""
    uses_labels: ClassVar[bool] = False  # trains on an ImageFolder tree (class per folder)
    uses_fill: ClassVar[bool] = True  # drops pixels and needs the hole fill value
    needs_mask: ClassVar[bool | None] = None  # True: a mask kind; False: mask none; None: any
    # the dataclass of the method's own settings (config key `method_kwargs`); None: it takes none
    options_class: ClassVar[type | None] = None
    # its network fills the dropped pixels of a whole-image mask (the suites' inpainting figures)
    inpaints: ClassVar[bool] = False
    # its whole step can be captured as one CUDA graph (train.cuda_graph): `graphed_step()`
    graphable: ClassVar[bool] = False
    # its reconstruction loss covers every pixel (an autoencoder), not only the dropped ones
    reconstruct_all: ClassVar[bool] = False
    # the named config `cebench pretrain` picks without --config: for images of <= 96 px, above,
    # and above with the centre mask (or no --mask) when that differs (`train.auto_config_name`)
    small_config: ClassVar[str] = "small"
    large_config: ClassVar[str] = "paper-alexnet"
    centre_config: ClassVar[str | None] = None

    def __init__(
        self, cfg: Any, device: torch.device, dist: D.DistInfo, classes: list[str] | None = None
    ) -> None:
        self.cfg, self.device, self.dist = cfg, device, dist
        self.classes = list(classes or [])
        self.bf16 = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")
        self.fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.opts = self.options(cfg)
        self.models: dict[str, nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.build()

    # ----- what a method defines
    @classmethod
    def options(cls, cfg: Any) -> Any:
        """`cfg.method_kwargs` as this method's `options_class` (its defaults for missing keys);
        an unknown key, a bad value, or any key for a method without options is a ConfigError."""
        kwargs = dict(getattr(cfg, "method_kwargs", None) or {})
        if cls.options_class is None:
            if kwargs:
                raise ConfigError(f"method={cls.name} takes no method_kwargs, got {sorted(kwargs)}")
            return None
        return from_dict(cls.options_class, kwargs, prefix="method_kwargs.")

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Refuse config combinations this method cannot train (ConfigError naming the keys)."""
        if cls.needs_mask is True and cfg.mask.kind == "none":
            raise ConfigError(
                f"method={cls.name} needs a mask (center, random-block, random-region); "
                "mask none is --method autoencoder"
            )
        if cls.needs_mask is False and cfg.mask.kind != "none":
            raise ConfigError(f"method={cls.name} needs mask.kind=none, got {cfg.mask.kind}")

    @classmethod
    def default_lr(cls, cfg: Any) -> float:
        """optim.lr when the config leaves it empty."""
        return cfg.optim.lr_d

    @classmethod
    def adversarial(cls, cfg: Any) -> bool:
        """Whether a run of `cfg` trains a discriminator."""
        return False

    @classmethod
    def inpaint_refusal(cls, cfg: Any) -> str | None:
        """Why `cebench inpaint` cannot use a checkpoint of this method's run of `cfg` (the end
        of "PATH is a ..."), or None when it can."""
        return f"{cls.name} run: it has no decoder to inpaint with"

    @classmethod
    def inpainting_network(cls, cfg: Any) -> nn.Module:
        """The network of `cfg`'s run that `cebench inpaint` loads (its checkpoint's "net"),
        for the methods whose `inpaint_refusal` is None."""
        raise NotImplementedError(f"method {cls.name} has no inpainting network")

    def build(self) -> None:
        raise NotImplementedError

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on this process's share of the batch of `step`; returns
        detached 0-d metric tensors (see this module's docstring)."""
        raise NotImplementedError

    def sample_rows(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Rows of the sample grid for the images of the last step, or None (no grid)."""
        return None

    def graphed_step(self, capture: bool = True) -> Any:
        """`step` as one captured CUDA graph, with the same numbers (methods with `graphable`;
        capture=False runs its static-buffer form eagerly, what the CPU tests compare)."""
        raise NotImplementedError(f"method {self.name} has no graphed step")

    def encoder(self) -> tuple[nn.Module, str, dict[str, Any]]:
        """(encoder module, registry name, build kwargs): what encoder.pt holds."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """Method-specific entries of encoder.pt's meta and summary.json."""
        return {"mask": self.cfg.mask.kind if self.uses_fill else None}

    # ----- helpers for subclasses
    def prepare(self, module: nn.Module) -> nn.Module:
        """Synchronised BatchNorm under several processes, then to the device, in train mode."""
        if self.dist.enabled:
            module = D.convert_sync_batchnorm(module, self.device.type)
        return module.to(self.device, memory_format=self.fmt).train()

    def adam(self, module: nn.Module, lr: float) -> torch.optim.Adam:
        o = self.cfg.optim
        return torch.optim.Adam(
            module.parameters(),
            lr=lr,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            fused=self.device.type in ("cuda", "cpu") or None,  # one pass (benchmarks/README.md)
        )
