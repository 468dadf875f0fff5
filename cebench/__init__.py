"""cebench: Context Encoders (Pathak et al., CVPR 2016) as a self-supervised feature-learning suite.

    import cebench
    enc = cebench.build_encoder("tiny", input_size=64)          # any registered encoder
    run = cebench.pretrain_encoder("data/builtin/unlabelled", out="runs/ce", overrides=["train.steps=50"])
    enc, info = cebench.load_encoder(run / "encoder.pt")
    cebench.export_encoder(run, "ce.safetensors")               # timm / torchvision names + ce.safetensors.json
    metrics = cebench.classify(encoder=str(run), data="data/builtin/imagefolder", out="runs/cls",
                               preset="small")                 # the preset for the built-in data
    cebench.run_suite("mini", out="results/mini")

Layers (each imports only those below it): `cebench.benchmarks` -> `cebench.transfer` ->
`cebench.pretrain` -> `cebench.core` and `cebench.data`. The names below are imported on first
use, so `import cebench` (and the `cebench` command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from cebench.core.provenance import package_version

__version__ = package_version()

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "build_encoder": ("cebench.pretrain.models", "build_encoder"),
    "list_encoders": ("cebench.pretrain.models", "list_encoders"),
    "load_encoder": ("cebench.pretrain.encoder_file", "load_encoder"),
    "resolve_encoder": ("cebench.transfer.encoders", "resolve_encoder"),
    "export_encoder": ("cebench.pretrain.export", "export_encoder"),
    "load_pretrain_config": ("cebench.pretrain.config", "load_pretrain_config"),
    "pretrain_encoder": ("cebench.api", "pretrain_encoder"),
    "inpaint": ("cebench.api", "inpaint"),
    "transfer": ("cebench.api", "transfer"),
    "run_suite": ("cebench.api", "run_suite"),
    "CebenchError": ("cebench.core.errors", "CebenchError"),
    "ConfigError": ("cebench.core.errors", "ConfigError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(f"module 'cebench' has no attribute '{name}'")
    if name not in _EXPORTS:
        # every registered transfer task is `cebench.<task>(preset=..., **keys)` (cebench.api)
        from cebench.transfer.tasks import list_tasks

        if name not in list_tasks():
            raise AttributeError(f"module 'cebench' has no attribute '{name}'")
        return getattr(importlib.import_module("cebench.api"), name)
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    from cebench.transfer.tasks import list_tasks

    return sorted({*__all__, *list_tasks()})
