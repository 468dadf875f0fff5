"""Typed configuration of one pretraining run (`cebench pretrain`), with one set of defaults.

    from cebench.pretrain.config import load_pretrain_config
    cfg = load_pretrain_config("small", ["train.steps=200", "mask.kind=center"])

A config is `PretrainConfig` with sections data / model / mask / loss / optim / train / monitor. The model
section is a `cebench.pretrain.models.context_encoder.ModelConfig`; its starting values come from the named
preset `model_preset` (MODEL_PRESETS), then the YAML file, then `key=value` overrides. Named
configs live in `pretrain/configs/<name>.yaml`; a config file may inherit from others with
`_base_: NAME_OR_PATH` (deep-merged, see `cebench.core.config.load_yaml`), the one inheritance
of config files. `model_preset` only selects where the model section starts: a file (or an
override) that names another preset than its bases drops their `model:` keys (REBASE), so its
own model keys apply to the preset it names. Values that are resolved at run time (`optim.lr`
left empty, `data.fill_value` computed from the data) are written back into the run's config.yaml,
so the saved config says exactly what ran.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from cebench.core.config import (
    _deep_merge,
    apply_overrides,
    check_seed,
    from_dict,
    load_yaml,
    merge_bases,
    named_yaml,
    rebased,
    to_dict,
)
from cebench.core.errors import ConfigError
from cebench.core.threads import check_workers
from cebench.pretrain.masks import REGION_WEIGHTINGS
from cebench.pretrain.methods import get_method
from cebench.pretrain.models.context_encoder import MODEL_PRESETS, ModelConfig, model_config
from cebench.pretrain.monitor import MonitorConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# a file naming another model preset than its bases starts the model section from that preset
REBASE = {"model_preset": ("model", "small-tiny")}
# The released code's fill value: RGB (117, 104, 123) / 255 (Pathak et al., train.lua).
RELEASED_MEAN_RGB = (117 / 255, 104 / 255, 123 / 255)

MaskKind = Literal["center", "random-block", "random-region", "none"]


@dataclass
class DataConfig:
    path: str = ""  # training images (any folder tree); an ImageFolder tree for --method supervised
    # a dataset root's split to pretrain on (VOC ImageSets/*/<split>.txt, ImageFolder <split>/,
    # COCO json name; --method supervised: the ImageFolder's <split>/ folder); "" = all of its
    # photos (cebench.data.layout.pretrain_images)
    split: str = ""
    load_size: int = 0  # resize the shorter side to this before cropping; 0 = keep the size
    crop: Literal["random", "center"] = "random"
    flip: bool = True  # random horizontal flip
    fill: Literal["dataset", "released", "value"] = "dataset"  # how the hole fill is chosen
    fill_value: list[float] | None = (
        None  # RGB in [0, 1]; filled in at run time for "dataset"/"released"
    )
    fill_samples: int = 256  # images averaged for fill="dataset"
    workers: int = -1  # DataLoader workers; -1 = min(4, cpus) on the CPU, min(8, cpus - 1) on a GPU
    skip_bad_images: bool = (
        False  # replace an undecodable image by the next one (counted) instead of stopping
    )
    max_pixels: int = 89_478_485  # an image with more pixels (w x h) is a bad image (PIL's level)
    # cpu: workers decode with PIL; device: workers read bytes, the training device decodes JPEGs
    # and resizes / crops / flips the batch (cebench.pretrain.device_data)
    decode: Literal["cpu", "device"] = "cpu"

    def validate(self) -> None:
        check_workers(self.workers, "data.workers (-1 = automatic)", lowest=-1)
        if self.load_size < 0:
            raise ConfigError(f"data.load_size must be >= 0, got {self.load_size}")
        if self.fill_samples < 1:
            raise ConfigError(f"data.fill_samples must be >= 1, got {self.fill_samples}")
        if self.max_pixels < 1:
            raise ConfigError(f"data.max_pixels must be >= 1, got {self.max_pixels}")
        if self.fill_value is not None and (
            len(self.fill_value) != 3 or not all(0.0 <= v <= 1.0 for v in self.fill_value)
        ):
            raise ConfigError(f"data.fill_value must be 3 numbers in [0, 1], got {self.fill_value}")
        if self.fill == "value" and self.fill_value is None:
            raise ConfigError("data.fill=value needs data.fill_value=[r,g,b] (in [0, 1])")


@dataclass
class MaskConfig:
    kind: MaskKind = "random-region"
    region: int = 0  # centre mask: side of the predicted region; 0 = half the input side (1/4 area)
    overlap: int = (
        4  # the hole is `overlap` px smaller on each side; that band is weighted border_weight
    )
    coverage: float = 0.25  # random masks: fraction of the image dropped (at most)
    border_weight: float = 10.0
    # random-region shapes: a VOC root whose SegmentationClass objects are deformed and pasted (the
    # paper's method); empty = the released code's thresholded-noise regions
    shapes: str = ""
    shapes_split: str = "train"
    shapes_max_images: int = 500

    def validate(self) -> None:
        if self.shapes_max_images < 1:
            raise ConfigError(f"mask.shapes_max_images must be >= 1, got {self.shapes_max_images}")
        if self.region < 0:
            raise ConfigError(f"mask.region must be >= 0, got {self.region}")
        if self.overlap < 0:
            raise ConfigError(f"mask.overlap must be >= 0, got {self.overlap}")
        if not 0.0 < self.coverage <= 1.0:
            raise ConfigError(f"mask.coverage must be in (0, 1], got {self.coverage}")
        if self.border_weight < 0:
            raise ConfigError(f"mask.border_weight must be >= 0, got {self.border_weight}")


@dataclass
class LossConfig:
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001  # 0 = L2 only: no discriminator is built or stepped
    # pixels of the reconstruction loss (pretrain/masks.py, resolve_region_weighting): "paper"
    # (centre, random-block: hole + mask.overlap band weighted mask.border_weight; random-region:
    # the dropped pixels only), "overlap" (the band for every mask), "hole" (dropped pixels
    # only), "whole" (plain whole-image L2, as the released train_random.lua)
    region_weighting: str = "paper"

    def validate(self) -> None:
        if self.region_weighting not in REGION_WEIGHTINGS:
            raise ConfigError(
                f"loss.region_weighting must be one of {list(REGION_WEIGHTINGS)}, "
                f"got {self.region_weighting!r}"
            )
        if self.lambda_rec < 0 or self.lambda_adv < 0 or self.lambda_rec + self.lambda_adv == 0:
            raise ConfigError(
                f"loss.lambda_rec and loss.lambda_adv must be >= 0 and not both 0, "
                f"got {self.lambda_rec}, {self.lambda_adv}"
            )


@dataclass
class OptimConfig:
    lr: float | None = (
        None  # context encoder / supervised net; empty = 10 x lr_d under the joint loss, else lr_d
    )
    lr_d: float = 2e-4  # discriminator (released code)
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0

    def validate(self) -> None:
        for name in ("lr", "lr_d"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"optim.{name} must be > 0, got {v}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class TrainConfig:
    out: str = ""  # run directory
    steps: int = 1000
    batch_size: int = 64  # global batch: per-process batch x number of processes
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = False
    # one CUDA graph per step (cebench.pretrain.graph_step): off | on | auto (on, quiet off CUDA)
    cuda_graph: Literal["off", "on", "auto"] = "off"
    log_every: int = 10
    save_every: int = 500
    sample_every: int = 500  # PNG grid into samples/, and one at the last step; 0 = never
    # TensorBoard event files beside metrics.jsonl (losses, lr, img/s, sample grids, the config)
    tensorboard: bool = True
    resume: bool = False

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ConfigError(f"train.sample_every must be >= 0, got {self.sample_every}")
        check_seed(self.seed, "train.seed")


@dataclass
class PretrainConfig:
    method: str = "context-encoder"  # a registered method (cebench.pretrain.methods)
    # the method's own settings, checked against its `options_class` (e.g. {patch: 16, ratio: 0.75})
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    model_preset: str = "small-tiny"
    model: ModelConfig = field(default_factory=lambda: model_config("small-tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # the online kNN probe (cebench.pretrain.monitor): off unless monitor.data is set
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def validate(self) -> None:
        # unknown method: ConfigError listing the registered ones; unknown method_kwargs named
        get_method(self.method).options(self)
        if self.model_preset not in MODEL_PRESETS:
            raise ConfigError(
                f"unknown model_preset '{self.model_preset}'; presets: {', '.join(sorted(MODEL_PRESETS))}"
            )
        size = self.model.input_size
        if self.mask.kind == "center":
            region = self.mask.region or size // 2
            if region - 2 * self.mask.overlap <= 0 or region > size:
                raise ConfigError(
                    f"mask.region={region} with mask.overlap={self.mask.overlap} does not fit a "
                    f"{size} px input (need 2*overlap < region <= input size)"
                )

    def resolved_lr(self) -> float:
        """The released code's rule: the context encoder's lr is 10x the discriminator's under
        the joint loss (0 < lambda_rec < 1 and lambda_adv > 0), else equal to it."""
        if self.optim.lr is not None:
            return self.optim.lr
        return get_method(self.method).default_lr(self)


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_file: str) -> Path:
    """A named config (`small`, `paper-inpainting`) or a path to a YAML file."""
    return named_yaml(name_or_file, CONFIG_DIR, "config", "named configs")


def _preset_base(preset: str) -> dict[str, Any]:
    if preset not in MODEL_PRESETS:
        raise ConfigError(
            f"unknown model_preset '{preset}'; presets: {', '.join(sorted(MODEL_PRESETS))}"
        )
    base = to_dict(PretrainConfig())
    base["model_preset"] = preset
    base["model"] = to_dict(MODEL_PRESETS[preset])
    return base


def config_from_dict(data: dict[str, Any], where: str = "") -> PretrainConfig:
    """Defaults, then the model preset named in `data` (if any), then `data` itself. A `_base_`
    key in `data` (a named config or a YAML path) is merged in under `data` first."""
    try:
        data = merge_bases(data, where or "pretrain config", (CONFIG_DIR,), REBASE)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    preset = data.get("model_preset", PretrainConfig.model_preset)
    try:
        base = _preset_base(str(preset))
        model = data.get("model")
        if isinstance(model, dict) and model.get("encoder") not in (None, base["model"]["encoder"]):
            # another encoder than the preset's: the preset's encoder_kwargs (a width, a depth)
            # are not its arguments
            base["model"]["encoder_kwargs"] = {}
        return from_dict(PretrainConfig, _deep_merge(base, data))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def saved_config(saved: dict[str, Any], where: str = "checkpoint config") -> PretrainConfig:
    """A config saved whole with its run (a checkpoint's): as `config_from_dict`, but its
    model.encoder_kwargs stand as saved instead of being merged into the preset's (a run of
    model.encoder=timm on the small-tiny preset must not get the tiny encoder's width back)."""
    cfg = config_from_dict(saved, where)
    kwargs = (saved.get("model") or {}).get("encoder_kwargs")
    if isinstance(kwargs, dict):
        cfg.model.encoder_kwargs = copy.deepcopy(kwargs)
    return cfg


def load_pretrain_config(
    name_or_file: str | Path | None = None, overrides: list[str] | None = None
) -> PretrainConfig:
    """Defaults -> model preset -> named config / YAML file -> `key=value` overrides.

    An override of `model_preset=NAME` naming another preset than the file's re-bases the model
    section on that preset: the file's model keys are dropped (they were written for its own
    preset), the other overrides' model keys apply."""
    overrides = list(overrides or [])
    data: dict[str, Any] = {}
    where = ""
    if name_or_file is not None:
        path = config_path(str(name_or_file))
        data, where = load_yaml(path, (CONFIG_DIR,), REBASE), str(path)
    preset_over = [o for o in overrides if o.split("=", 1)[0].strip() == "model_preset"]
    if preset_over:
        chosen = {"model_preset": preset_over[-1].split("=", 1)[1].strip()}
        data = {**rebased(data, chosen, REBASE), **chosen}
    cfg = config_from_dict(data, where)
    rest = [o for o in overrides if o not in preset_over]
    return apply_overrides(cfg, rest)


# keys a resumed run may change: where and how long it runs, not what it trains
RUNTIME_KEYS = {
    "train": (
        "out",
        "steps",
        "resume",
        "device",
        "log_every",
        "save_every",
        "sample_every",
        "tensorboard",
        "cuda_graph",  # the same numbers as the eager step (cebench.pretrain.graph_step)
    ),
    "data": ("path", "workers", "max_pixels"),
    "monitor": tuple(f.name for f in fields(MonitorConfig)),  # watches training, never changes it
}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "encoder_kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resumed_config(cfg: PretrainConfig, saved: dict[str, Any]) -> PretrainConfig:
    """The run's saved config (from its checkpoint) with only RUNTIME_KEYS taken from `cfg`;
    any other key that differs is named on stderr as ignored (nothing changes silently)."""
    import sys

    out = saved_config(saved)
    for section, keys in RUNTIME_KEYS.items():
        for key in keys:
            setattr(getattr(out, section), key, getattr(getattr(cfg, section), key))
    new, old = _flatten(to_dict(cfg)), _flatten(to_dict(out))
    # optim.lr / data.fill_value are resolved at run time: empty on the command line is not a change
    ignored = sorted(
        k
        for k in new
        if new[k] != old.get(k) and not (k in ("optim.lr", "data.fill_value") and new[k] is None)
    )
    if ignored:
        print(
            f"note: resuming with the run's saved config; ignoring changed keys: {', '.join(ignored)}",
            file=sys.stderr,
        )
    return out


def check_consistency(cfg: PretrainConfig) -> None:
    """Method / mask / model combinations that cannot train (an error, not a silent change):
    each registered method checks its own (`PretrainMethod.check`)."""
    get_method(cfg.method).check(cfg)
