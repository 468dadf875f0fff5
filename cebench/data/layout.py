"""One answer to "what dataset is at this path?", shared by every command.

    for kind, where in detect_layout("data/VOCdevkit"):   # [("voc", .../VOC2007), ("voc", .../VOC2012)]
        ...
    kind, root = transfer_root("data/builtin")            # ("voc", data/builtin/VOC)
    images = guess_coco_images(Path("coco/annotations/instances_val2017.json"))   # coco/val2017
    val = guess_coco_val("coco/annotations/instances_train2017.json")             # ..._val2017.json

Kinds: "synth" (a root written by `cebench data synth`), "voc" (JPEGImages/, Annotations/ or
ImageSets/; also `VOCdevkit/` or a folder holding `VOC*` roots), "coco" (an instances json, or a
folder with annotations/*.json), "imagefolder" (`class/image` folders, or its train/ val/ splits)
and "images" (any other folder of images). `cebench data check`, the transfer harnesses and
pretraining's automatic config choice all call `detect_layout`, so they agree on every path.
"""

from __future__ import annotations

from pathlib import Path

from cebench.core.errors import DatasetError
from cebench.data.images import is_image_file

SPLIT_NAMES = ("train", "val", "test", "trainval")


def is_imagefolder(root: Path) -> bool:
    """Class sub-folders that each hold images, and no loose images beside them."""
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    return (
        bool(subdirs)
        and not loose
        and all(any(is_image_file(f) for f in d.iterdir()) for d in subdirs)
    )


def detect_layout(path: str | Path) -> list[tuple[str, Path]]:
    """[(kind, path)] of the dataset(s) at `path` (see the module docstring for the kinds)."""
    path = Path(path)
    if path.is_file():
        return [("coco", path)] if path.suffix == ".json" else [("images", path)]
    if path.exists() and not path.is_dir():  # a FIFO, socket or device: list_images refuses it
        return [("images", path)]
    if (path / "synth.json").is_file() or (
        (path / "VOC").is_dir() and (path / "unlabelled").is_dir()
    ):
        return [("synth", path)]
    if any((path / d).is_dir() for d in ("JPEGImages", "Annotations", "ImageSets")):
        return [("voc", path)]
    devkit = path / "VOCdevkit" if (path / "VOCdevkit").is_dir() else path
    vocs = sorted(p for p in devkit.glob("VOC*") if p.is_dir() and (p / "Annotations").is_dir())
    if vocs:
        return [("voc", p) for p in vocs]
    jsons = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
    if jsons:
        return [("coco", j) for j in jsons]
    splits = [path / s for s in SPLIT_NAMES if (path / s).is_dir()]
    if splits and all(is_imagefolder(s) for s in splits):
        return [("imagefolder", s) for s in splits]
    if is_imagefolder(path):
        return [("imagefolder", path)]
    return [("images", path)]


def transfer_root(data: str | Path) -> tuple[str, Path]:
    """('voc' | 'imagefolder', root) for a transfer harness's `--data`.

    A VOC root, a `VOCdevkit/` holding one VOC year (several: name the one you mean), the built-in
    data's root (its VOC/), or an ImageFolder root with train/ and val/ (a single ImageFolder
    split is refused: the harnesses need both)."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"--data {root}: no such directory")
    found = detect_layout(root)
    kinds = {k for k, _ in found}
    if kinds == {"synth"}:
        return "voc", root / "VOC"
    if kinds == {"voc"}:
        if len(found) > 1:
            names = ", ".join(str(p) for _, p in found)
            raise DatasetError(f"--data {root} holds several VOC roots ({names}); give one of them")
        return "voc", found[0][1]
    if kinds == {"imagefolder"} and {p.name for _, p in found} >= {"train", "val"}:
        return "imagefolder", root
    raise DatasetError(
        f"--data {root}: neither a VOC root (JPEGImages/, ImageSets/) nor an ImageFolder root (train/, val/)"
    )


def guess_coco_images(ann_file: Path) -> Path | None:
    """instances_val2017.json -> ../val2017 or ../images; the synthetic layout -> ../../VOC/JPEGImages."""
    base = ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent
    split = ann_file.stem.split("_", 1)[-1]
    for cand in (
        base / split,
        base / "images" / split,
        base / "images",
        base.parent / "VOC" / "JPEGImages",
    ):
        if cand.is_dir():
            return cand
    return None


def guess_coco_val(ann_file: str | Path) -> Path:
    """The evaluation json beside a training json: the last 'train' of the file name -> 'val'
    (instances_train2017.json -> instances_val2017.json; folders are left alone)."""
    ann_file = Path(ann_file)
    head, sep, tail = ann_file.name.rpartition("train")
    return ann_file.with_name(f"{head}val{tail}" if sep else ann_file.name)
