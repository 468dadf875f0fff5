"""Any timm convolutional backbone as an `Encoder` (stage names and strides from timm's feature_info).

    from cebench.pretrain.models import build_encoder
    enc = build_encoder("timm-resnet18", input_size=64)          # act1, layer1 .. layer4
    enc = build_encoder("timm", model_name="convnext_atto", input_size=64)
    enc = build_encoder("timm-resnet18", pretrained=True)       # ImageNet weights from the local cache

Built with `timm.create_model(name, features_only=True, pretrained=False)`. When timm's feature
extractor is a plain sequence of modules (ResNet, ConvNeXt, ...), it is regrouped into one
`stages` entry per returned feature, so transfer code can freeze or re-initialise stage by stage;
otherwise (EfficientNet's own feature class, hook-based extractors) the whole extractor is kept as
`body` and `stages` is empty. `pretrained=True` loads only weights already in the local timm / HF
hub or torch hub cache (`cebench.pretrain.models.hub`); nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.models._registry import register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo
from cebench.pretrain.models.hub import load_hub_weights


def _create(model_name: str, pretrained: bool, out_indices: tuple[int, ...] | None) -> nn.Module:
    import timm

    kwargs: dict = {"features_only": True}
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
    ) -> None:
        super().__init__(input_size)
        self.model_name = model_name
        try:
            body = _create(model_name, pretrained, out_indices)
        except RuntimeError as e:  # timm: "Unknown model (...)"
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
