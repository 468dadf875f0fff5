"""`cebench export`: a pretrained encoder's weights under the native names of its family.

    cebench export runs/ce --format timm --out resnet18-ce.safetensors        # timm-resnet18, timm
    cebench export runs/ce-alexnet --format torchvision --out alexnet-ce.pth  # AlexNet, torchvision layout
    cebench export runs/ce-tiny --out tiny-ce.pt                               # tiny / dcgan: state-dict

    import cebench, timm
    path = cebench.export_encoder("runs/ce", "resnet18-ce.safetensors")   # format: the family's own
    model = timm.create_model("resnet18", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(path)))

Formats (`--format`, default: the encoder family's own):
- `timm`: every backbone tensor of a `timm` / `timm-resnet18` encoder under the plain timm model's
  names (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; cebench wraps timm's `features_only`
  model, whose names differ). The map is found through timm itself: the plain model's tensors,
  each filled with its index, are loaded into a `features_only` model the way timm loads
  pretrained weights, so every feature tensor names its plain key. The classifier is not
  exported (`num_classes=0`).
- `torchvision`: AlexNet conv1..conv5 as torchvision's `features.{0,3,6,8,10}`; the classifier is
  not exported, so `torchvision.models.alexnet().load_state_dict(sd, strict=False)` misses only
  `classifier.*`. Only an encoder with torchvision's architecture fits (`layout: torchvision`,
  `norm: none`, width 1, groups 1, the default conv1, max pools).
- `state-dict`: the encoder's own state dict, for every encoder (tiny, dcgan, ...); rebuild it
  with `cebench.build_encoder(sidecar["encoder"], **sidecar["kwargs"])` and `load_state_dict`.

The file is safetensors for a `.safetensors` name, a plain `torch.save` dict for `.pt`, `.pth` or
`.bin`. A JSON sidecar (`FILE.json`) records the family and model name, the cebench encoder and
its kwargs, input size, input normalisation (pretraining scales images to [-1, 1]: mean = std =
0.5), the method, mask and steps that produced the weights, their commit, and a line that loads
the file. `load_exported(FILE)` rebuilds the cebench encoder from FILE and its sidecar (the
transfer harnesses' `--encoder FILE`); `encoder_from_native_file` loads a timm / torchvision
weight file into the matching cebench encoder (`--encoder hub:torchvision/alexnet,file=FILE`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.core.io import atomic_save, atomic_write_bytes, atomic_write_text, safe_load
from cebench.core.lock import refuse_overlap
from cebench.core.provenance import git_commit
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.models import build_encoder
from cebench.pretrain.models.alexnet import LAYOUTS, AlexNetEncoder
from cebench.pretrain.models.timm_encoder import TimmEncoder

EXPORT_FORMAT = "cebench-export/1"
# Pretraining scales images to [-1, 1].
MINUS_ONE_ONE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# torchvision AlexNet: features.{0,3,6,8,10} are conv1..conv5 (ReLUs and max pools between)
TORCHVISION_ALEXNET_CONVS = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10}
TORCHVISION_ALEXNET_ARCH = {
    "layout": "torchvision",
    "width": 1.0,
    "norm": "none",
    "poolfree": False,
    "groups": 1,
    "conv1_kernel": 11,
    "conv1_stride": 4,
    "conv1_padding": 2,
    "in_chans": 3,
}
_MARKER_OFFSET = 2  # timm key map: tensor i is filled with i + 2 (init values 0 and 1 never match)

KeyMap = dict[str, str]  # cebench state-dict key -> native key


def _timm_key_map(encoder: nn.Module, kwargs: dict[str, Any]) -> tuple[KeyMap, list[str]]:
    """cebench key -> plain timm model key, and the plain (num_classes=0) keys left out."""
    import timm

    name = encoder.model_name
    plain = timm.create_model(name, pretrained=False)
    native = plain.state_dict()
    names = list(native)
    markers = {k: torch.full_like(v, i + _MARKER_OFFSET) for i, (k, v) in enumerate(native.items())}
    feat_kwargs: dict[str, Any] = {"features_only": True}
    if kwargs.get("out_indices") is not None:
        feat_kwargs["out_indices"] = tuple(kwargs["out_indices"])
    # timm loads pretrained weights into the plain model before making it a feature extractor;
    # its notes on the head tensors a feature model drops are expected here
    timm_log = logging.getLogger("timm")
    level = timm_log.level
    timm_log.setLevel(logging.ERROR)
    try:
        body = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"state_dict": markers}, **feat_kwargs
        )
    finally:
        timm_log.setLevel(level)
    ours, theirs = encoder.state_dict(), body.state_dict()
    if len(ours) != len(theirs):
        raise ConfigError(
            f"timm model {name!r}: the encoder has {len(ours)} tensors, timm's feature model "
            f"{len(theirs)}; cannot map them to timm's names (export with --format state-dict)"
        )
    mapping: KeyMap = {}
    for (key, value), marked in zip(ours.items(), theirs.values(), strict=True):
        idx = int(marked.flatten()[0].item()) - _MARKER_OFFSET if marked.numel() else -1
        if (
            marked.shape != value.shape
            or not 0 <= idx < len(names)
            or not bool((marked == idx + _MARKER_OFFSET).all())
            or native[names[idx]].shape != value.shape
        ):
            raise ConfigError(
                f"timm model {name!r}: cannot map encoder tensor {key!r} to timm's names "
                "(export with --format state-dict)"
            )
        mapping[key] = names[idx]
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError(f"timm model {name!r}: two encoder tensors map to the same timm name")
    plain.reset_classifier(0)
    missing = [k for k in plain.state_dict() if k not in set(mapping.values())]
    return mapping, missing


def _alexnet_arch(encoder: AlexNetEncoder, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The architecture keys of an AlexNet encoder: its build kwargs over the defaults."""
    defaults = {
        k: p.default
        for k, p in inspect.signature(AlexNetEncoder.__init__).parameters.items()
        if k in TORCHVISION_ALEXNET_ARCH
    }
    arch = {**defaults, **{k: v for k, v in kwargs.items() if k in defaults}}
    arch["poolfree"] = encoder.poolfree  # alexnet-poolfree sets it without a kwarg
    if arch["conv1_padding"] is None:
        arch["conv1_padding"] = LAYOUTS.get(arch["layout"], {}).get("conv1_padding")
    return arch


def _torchvision_key_map(encoder: nn.Module, kwargs: dict[str, Any]) -> tuple[KeyMap, list[str]]:
    arch = _alexnet_arch(encoder, kwargs)
    wrong = {k: v for k, v in arch.items() if v != TORCHVISION_ALEXNET_ARCH[k]}
    if "layout" in wrong and kwargs.get("conv1_padding") is None:
        wrong.pop("conv1_padding", None)  # follows the layout
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise ConfigError(
            f"this AlexNet encoder ({got}) is not torchvision's AlexNet (64-192-384-256-256 "
            "filters, conv1 11x11/4 padding 2, no LRN or BatchNorm, no groups, max pools): to get a "
            "torchvision-loadable encoder, pretrain encoder alexnet with model.encoder_kwargs="
            "{layout: torchvision, norm: none} (width 1, groups 1, the default conv1); or export "
            "this one with --format state-dict"
        )
    mapping = {
        f"stages.{stage}.0.{p}": f"features.{idx}.{p}"
        for stage, idx in TORCHVISION_ALEXNET_CONVS.items()
        for p in ("weight", "bias")
    }
    if set(mapping) != set(encoder.state_dict()):
        raise ConfigError("this AlexNet encoder's tensors are not conv1..conv5 weights and biases")
    return mapping, [f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")]


def _identity_key_map(encoder: nn.Module, kwargs: dict[str, Any]) -> tuple[KeyMap, list[str]]:
    return {k: k for k in encoder.state_dict()}, []


# format -> (encoder class it needs or None for any, key map, family)
FORMATS: dict[str, tuple[type | None, Callable[..., tuple[KeyMap, list[str]]], str]] = {
    "timm": (TimmEncoder, _timm_key_map, "timm"),
    "torchvision": (AlexNetEncoder, _torchvision_key_map, "torchvision"),
    "state-dict": (None, _identity_key_map, "cebench"),
}


def native_format(encoder: nn.Module) -> str:
    """The format that gives this encoder its family's own names (state-dict when none)."""
    for fmt, (cls, _, _) in FORMATS.items():
        if cls is not None and isinstance(encoder, cls):
            return fmt
    return "state-dict"


def key_map(
    encoder: nn.Module, name: str, kwargs: dict[str, Any], fmt: str
) -> tuple[KeyMap, list[str]]:
    """(cebench key -> native key, native keys not exported) for `fmt`; ConfigError if it does not fit."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    cls, fn, _ = FORMATS[fmt]
    if cls is not None and not isinstance(encoder, cls):
        raise ConfigError(
            f"encoder '{name}' has no {fmt} counterpart; export it with "
            f"--format {native_format(encoder)}"
        )
    return fn(encoder, kwargs)


def _suffix_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise ConfigError(
        f"--out {path}: name the file .safetensors (safetensors) or .pt/.pth/.bin (torch state dict)"
    )


def write_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    if _suffix_kind(path) == "torch":
        atomic_save(state, path)
        return
    from safetensors.torch import save

    try:
        atomic_write_bytes(path, save(state, metadata={"format": "pt"}))
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e.strerror or e}") from e


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file (a {'state_dict': ...} wrapper is opened)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    state = safe_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _read_source(source: str | Path) -> tuple[nn.Module, dict[str, Any], Path]:
    path = Path(source)
    if path.is_dir():
        path = path / "encoder.pt"
    if not path.is_file():
        raise CheckpointError(f"encoder not found: {path} (give a run directory or its encoder.pt)")
    encoder, info = load_encoder(path)
    return encoder, info, path


def _load_line(fmt: str, model_name: str, file: str) -> str:
    if fmt == "timm":
        return (
            f"timm.create_model({model_name!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={file!r}), num_classes=0)"
        )
    read = (
        f"safetensors.torch.load_file({file!r})"
        if _suffix_kind(Path(file)) == "safetensors"
        else f"torch.load({file!r})"
    )
    if fmt == "torchvision":
        return f"torchvision.models.alexnet().load_state_dict({read}, strict=False)"
    return f"cebench.build_encoder({model_name!r}, **sidecar['kwargs']).load_state_dict({read})"


def _refuse_clobbering_the_source(out: Path, source: Path) -> None:
    """`out` may lie in the run folder it exports (beside encoder.pt), but may never be the
    encoder file itself nor replace a file of that run (checkpoint.pt, ...); an earlier export
    there (it has its sidecar) may be replaced."""
    encoder_file = source / "encoder.pt" if source.is_dir() else source
    refuse_overlap(out, {"source": encoder_file})
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        if not sidecar_path(out).is_file():
            for target in (out, sidecar_path(out)):
                if target.exists():
                    raise ConfigError(
                        f"--out {out} would replace {target}, a file of the run {source} it "
                        "exports; choose another --out"
                    )


def export_encoder(source: str | Path, out: str | Path, format: str | None = None) -> Path:
    """Write `out` (weights under the family's native names) and `out.json` (the sidecar).

    `source`: a run directory or its encoder.pt; `format`: timm, torchvision, state-dict, or None
    for the encoder family's own. Returns the weight file's path."""
    out = Path(out)
    _suffix_kind(out)
    _refuse_clobbering_the_source(out, Path(source))
    for target in (out, sidecar_path(out)):
        if target.is_dir():
            raise CheckpointError(f"could not write {target}: a folder is in the way")
    encoder, info, src = _read_source(source)
    fmt = format or native_format(encoder)
    mapping, missing = key_map(encoder, info["name"], info["kwargs"], fmt)
    sd = encoder.state_dict()
    state = {native: sd[k].detach().cpu().contiguous().clone() for k, native in mapping.items()}
    meta = info["meta"]
    model_name = {
        "timm": getattr(encoder, "model_name", None),
        "torchvision": "alexnet",
        "state-dict": info["name"],
    }[fmt]
    sidecar = {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "family": FORMATS[fmt][2],
        "model_name": model_name,
        "encoder": info["name"],
        "kwargs": info["kwargs"],
        "input_size": encoder.input_size,
        "normalize": meta.get("normalize", MINUS_ONE_ONE),
        "feature_names": encoder.feature_names,
        "num_features": encoder.num_features,
        "method": meta.get("method"),
        "mask": meta.get("mask"),
        "steps": meta.get("steps"),
        "git_commit": meta.get("git_commit"),
        "source": str(src),
        "exported_by_commit": git_commit(),
        "tensors": len(state),
        "not_exported": missing,
        "load": _load_line(fmt, model_name, out.name),
    }
    write_weights(state, out)
    try:
        atomic_write_text(sidecar_path(out), json.dumps(sidecar, indent=2, default=str) + "\n")
    except OSError as e:  # a weight file without its sidecar cannot be loaded: take it back
        out.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write {sidecar_path(out)}: {e.strerror or e}; {out} removed"
        ) from None
    return out


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def is_exported(path: str | Path) -> bool:
    """A file written by `cebench export` (it has a sidecar), or a safetensors file (needs one)."""
    path = Path(path)
    return path.is_file() and (
        sidecar_path(path).is_file() or path.suffix.lower() in SAFETENSORS_SUFFIXES
    )


def _to_encoder(
    encoder: nn.Module, mapping: KeyMap, state: dict[str, torch.Tensor], where: str
) -> None:
    absent = [native for native in mapping.values() if native not in state]
    if absent:
        raise CheckpointError(
            f"{where} lacks {len(absent)} of the encoder's {len(mapping)} tensors (first: {absent[0]})"
        )
    try:
        encoder.load_state_dict({k: state[native] for k, native in mapping.items()}, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{where}: weights do not fit the encoder: {detail}") from None


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the cebench encoder from an exported file and its sidecar -> (encoder, info).

    info = name, kwargs, meta (method, mask, steps, git_commit, normalize, exported_file)."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(
            f"{path} has no sidecar {side.name} (written by `cebench export`); for timm or "
            "torchvision ImageNet weights use --encoder hub:<source>,file=PATH"
        )
    try:
        car = json.loads(side.read_text())
    except (OSError, ValueError) as e:  # ValueError: malformed JSON, not text
        raise CheckpointError(f"{side} is not readable JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{side} is not readable JSON: nested too deeply") from None
    if not isinstance(car, dict) or car.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{side} is not a cebench export sidecar (format {EXPORT_FORMAT})")
    name, kwargs, fmt = car.get("encoder"), car.get("kwargs"), car.get("export_format")
    if not isinstance(name, str) or not isinstance(kwargs, dict) or fmt not in FORMATS:
        raise CheckpointError(
            f"{side}: 'encoder' (a name), 'kwargs' (a mapping) and 'export_format' "
            f"({', '.join(FORMATS)}) are required"
        )
    try:
        encoder = build_encoder(name, **kwargs)
        mapping, _ = key_map(encoder, name, kwargs, fmt)
    except Exception as e:  # built from the sidecar's fields: any failure is the file's
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{side}: encoder '{name}' with {kwargs}: {why}") from None
    _to_encoder(encoder, mapping, read_weights(path), str(path))
    meta = {k: car.get(k) for k in ("method", "mask", "steps", "git_commit", "normalize")}
    meta["normalize"] = meta["normalize"] or MINUS_ONE_ONE
    meta["exported_file"] = str(path)
    return encoder, {"name": name, "kwargs": kwargs, "meta": meta}


def encoder_from_native_file(name: str, kwargs: dict[str, Any], path: str | Path) -> nn.Module:
    """Build encoder `name` and load a timm / torchvision weight file (native names) into it;
    tensors outside the encoder are ignored (torchvision AlexNet's fc6/fc7 become its
    `trained_fc`), a missing one is a CheckpointError."""
    encoder = build_encoder(name, **kwargs)
    mapping, _ = key_map(encoder, name, kwargs, native_format(encoder))
    state = read_weights(path)
    _to_encoder(encoder, mapping, state, str(path))
    if hasattr(encoder, "take_trained_fc"):  # torchvision AlexNet's fc6/fc7, for the heads
        encoder.take_trained_fc(state)
    return encoder


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Export a pretrained encoder's weights under the names timm, torchvision "
        "or cebench itself load, with a JSON sidecar (FILE.json).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument("source", metavar="RUN_OR_ENCODER", help="a run directory or its encoder.pt")
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        help="timm (timm backbones), torchvision (AlexNet, torchvision layout) or state-dict "
        "(any encoder); default: the encoder family's own",
    )
    p.add_argument(
        "--out", required=True, help="weight file: .safetensors, or .pt/.pth/.bin (torch)"
    )
    return p


def main(args: argparse.Namespace) -> int:
    out = export_encoder(args.source, args.out, args.format)
    car = json.loads(sidecar_path(out).read_text())
    print(f"wrote {out} ({car['tensors']} tensors, {car['export_format']}) and {sidecar_path(out)}")
    print(f"load it with: {car['load']}")
    return 0
