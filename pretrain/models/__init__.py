"""Encoders (one file per family), the context-encoder parts, and the registry.

from cebench.pretrain.models import build_encoder, list_encoders
enc = build_encoder("tiny", input_size=64)
feats = enc.forward_features(images)   # {"conv1": ..., "conv2": ..., "conv3": ...}

from cebench.pretrain.models import build_context_encoder, build_discriminator, model_config
G = build_context_encoder(model_config("small-tiny"))
"""

from cebench.pretrain.models import alexnet, dcgan, timm_encoder, tiny  # noqa: F401  (register encoders)
from cebench.pretrain.models._registry import build_encoder, list_encoders, register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo
from cebench.pretrain.models.context_encoder import (
    MODEL_PRESETS,
    ContextEncoder,
    ModelConfig,
    build_context_encoder,
    build_discriminator,
    model_config,
    register_model_preset,
)
from cebench.pretrain.models.decoder import Discriminator

__all__ = [
    "MODEL_PRESETS",
    "ContextEncoder",
    "Discriminator",
    "Encoder",
    "FeatureInfo",
    "ModelConfig",
    "build_context_encoder",
    "build_discriminator",
    "build_encoder",
    "list_encoders",
    "model_config",
    "register_model_preset",
    "register_encoder",
]
