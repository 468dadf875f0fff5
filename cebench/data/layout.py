"""One answer to "what dataset is at this path?", shared by every command.

    for kind, where in detect_layout("data/VOCdevkit"):   # [("voc", .../VOC2007), ("voc", .../VOC2012)]
        ...
    kind, root = transfer_root("data/builtin")            # ("voc", data/builtin/VOC)
    images = guess_coco_images(Path("coco/annotations/instances_val2017.json"))   # coco/val2017
    val = guess_coco_val("coco/annotations/instances_train2017.json")             # ..._val2017.json

Kinds: "synth" (a root written by `cebench data synth`), "voc" (JPEGImages/, Annotations/,
ImageSets/ or SegmentationClass/; also `VOCdevkit/`, the folder above it, or a folder holding `VOC*`
roots; `voc_tasks` says which VOC tasks a root can serve), "coco" (an instances json, or a
folder with annotations/*.json), "imagefolder" (`class/image` folders, or its train/ val/ splits)
and "images" (any other folder of images). `cebench data check`, the transfer harnesses and
pretraining's automatic config choice all call `detect_layout`, so they agree on every path.

    paths, note = pretrain_images("VOCdevkit/VOC2012", "train")   # the photos only, never masks
    print(note)   # "VOC root VOCdevkit/VOC2012: 1,464 train images from JPEGImages"
"""

from __future__ import annotations

import os
from pathlib import Path

from cebench.core.errors import DatasetError
from cebench.data.images import has_image_suffix, is_image_file

SPLIT_NAMES = ("train", "val", "test", "trainval")
VOC_FOLDERS = ("JPEGImages", "Annotations", "ImageSets", "SegmentationClass")
# what each VOC task reads: detection and classification (Annotations + ImageSets/Main), and
# segmentation (SegmentationClass + ImageSets/Segmentation); JPEGImages for both
VOC_TASKS = {
    "detection": ("JPEGImages", "Annotations", "ImageSets/Main"),
    "segmentation": ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"),
}
# folder names that hold label images (masks, boundaries, trimaps) rather than photos, in the
# layouts people make: VOC, SBD (cls, inst), Cityscapes (gtFine), Oxford pets (trimaps), ...
LABEL_FOLDERS = {
    "segmentationclass", "segmentationobject", "segmentationclassaug", "segmentationclassraw",
    "mask", "masks", "label", "labels", "gt", "gtfine", "gtcoarse", "cls", "inst", "trimaps",
    "annotations", "groundtruth", "ground_truth",
}  # fmt: skip


def is_voc_root(path: Path) -> bool:
    """A VOC root: it has JPEGImages/, Annotations/, ImageSets/ or SegmentationClass/."""
    return any((path / d).is_dir() for d in VOC_FOLDERS)


def voc_tasks(root: Path) -> dict[str, list[str]]:
    """{task: the folders it needs that `root` lacks} for "detection" and "segmentation"
    (an empty list: the task can read this root)."""
    return {task: [f for f in need if not (root / f).is_dir()] for task, need in VOC_TASKS.items()}


def is_imagefolder(root: Path) -> bool:
    """Class sub-folders that each hold images, and no loose images beside them."""
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    return bool(subdirs) and not loose and all(_holds_image(d) for d in subdirs)


def _holds_image(folder: Path) -> bool:
    """Whether `folder` directly holds an image file; stops at the first (os.scandir reads the
    folder in chunks, so a class folder of ImageNet's is not listed whole)."""
    with os.scandir(folder) as entries:
        return any(has_image_suffix(e.name) and e.is_file() for e in entries)


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
    if is_voc_root(path):
        return [("voc", path)]
    devkit = path / "VOCdevkit" if (path / "VOCdevkit").is_dir() else path
    vocs = sorted(p for p in devkit.glob("VOC*") if p.is_dir() and is_voc_root(p))
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


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _voc_split_images(root: Path, split: str) -> tuple[list[Path], str]:
    """The JPEGImages of one split (ImageSets/Main, else ImageSets/Segmentation)."""
    from cebench.data.voc import find_image, read_split

    tasks = [
        t for t in ("Main", "Segmentation") if (root / "ImageSets" / t / f"{split}.txt").is_file()
    ]
    if not tasks:
        read_split(
            root, split, "Main" if (root / "ImageSets" / "Main").is_dir() else "Segmentation"
        )
    ids = read_split(root, split, tasks[0])
    return [find_image(root, i) for i in dict.fromkeys(ids)], f"ImageSets/{tasks[0]}/{split}.txt"


def label_folders(root: Path, paths: list[str] | list[Path]) -> list[str]:
    """Folders under `root` that hold some of `paths` and are named like label-image folders
    (SegmentationClass/, masks/, gtFine/, ...): a plain folder that mixes photos and masks."""
    parents = {Path(d) for d in {os.path.dirname(p) for p in paths}}
    found = set()
    for d in parents:
        rel = d.relative_to(root).parts if d.is_relative_to(root) else ()
        for k, part in enumerate(rel):
            if part.lower() in LABEL_FOLDERS:  # the outermost such folder names them all
                found.add("/".join(rel[: k + 1]))
                break
    return sorted(found)


def pretrain_images(data: str | Path, split: str = "") -> tuple[list[str], str]:
    """(the photos to pretrain on, as path strings; a line saying what was taken) for `--data`.

    A recognised layout gives its photos only: the built-in root its unlabelled/ images, a VOC root
    its JPEGImages (those of `split` when given: ImageSets/Main/<split>.txt, else
    ImageSets/Segmentation/<split>.txt), a COCO root the image folder of each instances json (of
    the json whose name holds `split`), an ImageFolder root its images (of the `split`/ folder).
    Any other folder: every image under it, with a warning in the line when some sit in folders
    named like label masks (SegmentationClass/, masks/, ...). DatasetError if nothing is found or
    `split` does not exist."""
    from cebench.data.images import list_image_strings as list_images  # strings: cheaper

    path = Path(data)
    if not path.exists():
        raise DatasetError(f"--data {path}: no such file or directory")
    found = detect_layout(path)
    kind = found[0][0]
    paths: list[Path] = []
    if kind == "synth":
        if split:
            raise DatasetError(
                f"data.split={split}: the built-in root's pretraining images (unlabelled/) have no splits"
            )
        paths = list_images(path / "unlabelled")
        return paths, f"built-in root {path}: {_count(len(paths), 'image')} from unlabelled/"
    if kind == "voc":
        parts = []
        for _, root in found:
            if not (root / "JPEGImages").is_dir():
                have = ", ".join(f"{d}/" for d in VOC_FOLDERS if (root / d).is_dir())
                raise DatasetError(
                    f"--data {root}: a VOC root ({have}) without JPEGImages/, so without photos"
                )
            if split:
                got, source = _voc_split_images(root, split)
                got = [str(p) for p in got]
                parts.append(f"{_count(len(got), split + ' image')} from JPEGImages ({source})")
            else:
                got = list_images(root / "JPEGImages")
                parts.append(f"{_count(len(got), 'image')} from JPEGImages (all splits)")
            paths += got
        where = ", ".join(str(r) for _, r in found)
        return paths, f"VOC root {where}: " + "; ".join(parts)
    if kind == "coco":
        jsons = [j for _, j in found if not split or split in j.stem]
        if not jsons:
            raise DatasetError(
                f"data.split={split}: no instances json under {path} has {split!r} in its name "
                f"(found: {', '.join(j.name for _, j in found)})"
            )
        folders = []
        for j in jsons:
            folder = guess_coco_images(j)
            if folder is None:
                raise DatasetError(f"{j}: image folder not found beside it")
            if folder not in folders:
                folders.append(folder)
                paths += list_images(folder)
        names = ", ".join(f"{f.name}/" for f in folders)
        return paths, f"COCO root {path}: {_count(len(paths), 'image')} from {names}"
    if kind == "imagefolder":
        roots = [r for _, r in found]
        if split:
            roots = [r for r in roots if r.name == split]
            if not roots:
                raise DatasetError(f"data.split={split}: {path} has no {split}/ split folder")
        for r in roots:
            paths += list_images(r)
        names = ", ".join(f"{r.name}/" for r in roots)
        return paths, f"ImageFolder {path}: {_count(len(paths), 'image')} from {names}"
    if split:
        raise DatasetError(f"data.split={split}: {path} is a plain image folder, without splits")
    paths = list_images(path)
    note = f"image folder {path}: {_count(len(paths), 'image')}"
    masks = label_folders(path, paths) if path.is_dir() else []
    if masks:
        note += (
            f"; warning: {', '.join(f + '/' for f in masks)} look like label masks, not photos "
            "(point --data at the photos' folder, or at the dataset's root if it is VOC/COCO/ImageFolder)"
        )
    return paths, note
