"""Pretrained weights from the local caches only: nothing is ever downloaded at run time.

    from cebench.pretrain.models.hub import load_hub_weights
    sd = load_hub_weights(url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
    sd = load_hub_weights(hf_repo="timm/resnet18.a1_in1k")

Looks in the torch hub cache (`$TORCH_HOME/hub/checkpoints/<file name of url>`, by default
`~/.cache/torch/hub/checkpoints`) and the Hugging Face hub cache (`$HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`); a missing file is a CheckpointError that says where it was looked
for. To use ImageNet weights, place the file there on a machine with internet access first
(for example run `timm.create_model(name, pretrained=True)` or
`torchvision.models.alexnet(weights="IMAGENET1K_V1")` once there) and copy the cache over.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from cebench.core.errors import CheckpointError

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def offline_hubs() -> None:
    """Turn on the hubs' own offline switches for this process (and its children): the Hugging
    Face hub (HF_HUB_OFFLINE, also in an already imported huggingface_hub) that timm asks for
    `hf-hub:` names and pretrained configs. Called before timm builds anything, so that no file
    (an encoder.pt, a sidecar, a suite) can make cebench go to the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_hub_weights(*, url: str | None = None, hf_repo: str | None = None) -> Path:
    """Path of a cached weight file for `url` (torch hub cache) or `hf_repo` (Hugging Face cache)."""
    if url is None and hf_repo is None:
        raise ValueError("find_hub_weights needs url= or hf_repo=")
    looked: list[str] = []
    if hf_repo is not None:
        from huggingface_hub import try_to_load_from_cache

        cache_dir = os.environ.get("HF_HUB_CACHE")
        for name in HF_FILENAMES:
            found = try_to_load_from_cache(hf_repo, name, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        looked.append(f"Hugging Face cache {cache_dir or '~/.cache/huggingface/hub'} for {hf_repo}")
    if url is not None:
        path = torch_hub_checkpoint_dir() / Path(urlparse(url).path).name
        if path.is_file():
            return path
        looked.append(str(path))
    raise CheckpointError(
        "pretrained weights not found in the local cache (looked in: "
        + "; ".join(looked)
        + "). Nothing is downloaded at run time: copy the weight file into that cache first"
    )


def load_hub_weights(
    *, url: str | None = None, hf_repo: str | None = None
) -> dict[str, torch.Tensor]:
    """The cached state dict for `url` / `hf_repo` (see `find_hub_weights`), loaded weights-only."""
    path = find_hub_weights(url=url, hf_repo=hf_repo)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cached weights {path} could not be read: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"cached weights {path} do not hold a state dict")
    return state
