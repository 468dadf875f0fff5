"""Any timm convolutional backbone as an `Encoder` (stage names and strides from timm's feature_info).

    from cebench.pretrain.models import build_encoder
    enc = build_encoder("timm-resnet18", input_size=64)          # act1, layer1 .. layer4
    enc = build_encoder("timm", model_name="convnext_atto", input_size=64)
    enc = build_encoder("timm-resnet18", pretrained=True)       # ImageNet weights from the local cache
    enc = build_encoder("timm", model_name="vit_tiny_patch16_224", input_size=32,
                        model_kwargs={"patch_size": 8, "depth": 2})   # a ViT built for 32 px

Built with `timm.create_model(name, features_only=True, pretrained=False)`. When timm's feature
extractor is a plain sequence of modules (ResNet, ConvNeXt, ...), it is regrouped into one
`stages` entry per returned feature, so transfer code can freeze or re-initialise stage by stage;
otherwise (EfficientNet's own feature class, hook-based extractors) the whole extractor is kept as
`body` and `stages` is empty. `pretrained=True` loads only weights already in the local timm / HF
hub or torch hub cache (`cebench.pretrain.models.hub`); nothing is downloaded.
`model_kwargs` go to `timm.create_model` as they are (`patch_size`, `embed_dim`, `depth`, ...).
A vision transformer (timm's `vision_transformer` family) is built for `input_size` (timm's
`img_size`) and kept whole inside timm's feature getter: its features are the last blocks' patch
tokens as [B, C, S/patch, S/patch] maps, and `vision_transformer(enc)` hands the model itself to
code that runs it on a subset of its tokens (MAE, `cebench.pretrain.models.mae`).
"""

from __future__ import annotations

import torch
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.models._registry import register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo
from cebench.pretrain.models.hub import load_hub_weights, offline_hubs

# timm.create_model keywords that fetch or read weights or configs: never from model_kwargs (a
# value read from a file); pretrained weights come only through `pretrained` and the local caches
_LOADING_KWARGS = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}
)


def check_timm_name(model_name: object, model_kwargs: object = None) -> None:
    """ConfigError unless `model_name` is a model timm's local registry knows (`resnet18`,
    `resnet18.a1_in1k`; never `hf-hub:...` or `local-dir:...`, which timm resolves over the
    network or the file system) and `model_kwargs` is a mapping of plain data without the
    keywords that load weights. Names and kwargs read from an encoder.pt or a sidecar are data."""
    from timm.models import is_model

    if not isinstance(model_name, str) or ":" in model_name or not is_model(model_name):
        raise ConfigError(
            f"timm: unknown model_name {model_name!r} (only names in timm's local registry, "
            "as timm.list_models() gives them; no hf-hub: or local-dir: sources)"
        )
    if model_kwargs is None:
        return
    if not isinstance(model_kwargs, dict):
        raise ConfigError(f"timm: model_kwargs must be a mapping, got {model_kwargs!r}")
    for key, value in model_kwargs.items():
        if not isinstance(key, str) or key in _LOADING_KWARGS:
            raise ConfigError(
                f"timm: model_kwargs may not hold {key!r} (it loads weights or configs); use "
                "pretrained=true (local caches only) or a cebench checkpoint"
            )
        if not _plain(value):
            raise ConfigError(f"timm: model_kwargs[{key!r}] must be plain data, got {value!r}")


def _plain(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _create(
    model_name: str,
    pretrained: bool,
    out_indices: tuple[int, ...] | None,
    input_size: int,
    model_kwargs: dict | None,
) -> nn.Module:
    offline_hubs()
    import timm
    from timm.models import is_model_in_modules

    check_timm_name(model_name, model_kwargs)
    kwargs: dict = {"features_only": True, **(model_kwargs or {})}
    if is_model_in_modules(model_name, ["vision_transformer"]):
        kwargs.setdefault("img_size", input_size)  # position embeddings for this input size
        if out_indices is None and "depth" in kwargs:  # timm's default: the last 3 blocks
            out_indices = tuple(range(int(kwargs["depth"])))[-3:]
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(f"timm model {model_name!r} has no pretrained weights to look up")
    state = load_hub_weights(url=cfg.url or None, hf_repo=cfg.hf_hub_id or None)
    # timm applies its own key filtering / head removal to a state dict passed this way.
    return timm.create_model(
        model_name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs
    )


class TimmEncoder(Encoder):
    def __init__(
        self,
        model_name: str = "resnet18",
        input_size: int = 224,
        pretrained: bool = False,
        out_indices: tuple[int, ...] | list[int] | None = None,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__(input_size)
        self.model_name = model_name
        try:
            body = _create(model_name, pretrained, out_indices, input_size, model_kwargs)
        except (RuntimeError, AssertionError) as e:  # timm: "Unknown model (...)", bad sizes
            raise ConfigError(f"timm: cannot build {model_name!r}: {e}") from None
        infos = body.feature_info.get_dicts()
        self.body: nn.Module | None = None
        return_layers = getattr(body, "return_layers", None)
        if isinstance(body, nn.ModuleDict) and return_layers is not None:
            # timm FeatureDictNet: runs its modules in order and returns those in return_layers;
            # cutting the sequence after each returned module gives the stages, same computation.
            group: list[nn.Module] = []
            names: list[str] = []
            for name, module in body.items():
                group.append(module)
                if name in return_layers:
                    self.stages[name] = group[0] if len(group) == 1 else nn.Sequential(*group)
                    names.append(name)
                    group = []
        else:
            self.body = body
            names = [str(d["module"]).replace(".", "_") for d in infos]
        for name, d in zip(names, infos, strict=True):
            self.feature_info.append(FeatureInfo(name, int(d["num_chs"]), int(d["reduction"])))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.body is None:
            return super().forward_features(x)
        return dict(zip(self.feature_names, self.body(x), strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body is None:
            return super().forward(x)
        return self.body(x)[-1]


def vision_transformer(encoder: nn.Module) -> nn.Module | None:
    """The timm `VisionTransformer` inside a `TimmEncoder` (None for any other encoder); its
    weights are the encoder's, so training it trains the encoder."""
    from timm.models.vision_transformer import VisionTransformer

    model = getattr(getattr(encoder, "body", None), "model", None)
    return model if isinstance(model, VisionTransformer) else None


@register_encoder("timm")
def timm_encoder(**kwargs) -> TimmEncoder:
    return TimmEncoder(**kwargs)


@register_encoder("timm-resnet18")
def timm_resnet18(**kwargs) -> TimmEncoder:
    if "model_name" in kwargs:
        raise ConfigError(
            "timm-resnet18: do not pass model_name (use encoder 'timm' for other models)"
        )
    return TimmEncoder(model_name="resnet18", **kwargs)
