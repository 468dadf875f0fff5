"""Encoders (one file per family), the context-encoder parts, and the registry.

    from pretrain.models import build_encoder, list_encoders
    enc = build_encoder("tiny", input_size=64)
    feats = enc.forward_features(images)   # {"conv1": ..., "conv2": ..., "conv3": ...}
"""

from pretrain.models import tiny  # noqa: F401  (registers "tiny")
from pretrain.models._registry import build_encoder, list_encoders, register_encoder
from pretrain.models.base import Encoder, FeatureInfo

__all__ = ["Encoder", "FeatureInfo", "build_encoder", "list_encoders", "register_encoder"]
