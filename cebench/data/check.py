"""Validate a dataset folder: detect its format(s), print counts and sizes, list EVERY problem.

    cebench data check data/builtin                 # the synthetic root: all its parts
    cebench data check VOCdevkit/VOC2007            # a VOC root
    cebench data check instances_val.json --images val2017
    python -c "from cebench.data.check import check; print(check('data/builtin').problems)"

Formats, tried in this order: a `cebench data synth` root (synth.json or VOC/ + unlabelled/ ...),
a VOC root (JPEGImages/ or Annotations/ or ImageSets/; also VOCdevkit/VOC*), a COCO instances
json (a file, or DIR/annotations/*.json), an ImageFolder (class sub-folders; also train/ val/
of those), and finally a plain folder of images. Unlike the readers, which stop at the first bad
file, the checker collects every problem so that one run shows everything to fix.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cebench.core.errors import DatasetError
from cebench.data.coco import _load_json, coco_from_dict, coco_problems
from cebench.data.folder import find_classes
from cebench.data.images import is_image_file, list_images, load_rgb
from cebench.data.layout import detect_layout, guess_coco_images
from cebench.data.voc import (
    find_image,
    load_segmentation_mask,
    parse_annotation,
    read_classes,
    read_split,
)


@dataclass
class CheckReport:
    """What `check` found: `lines` to print (formats, counts, sizes) and `problems` ("PATH: what")."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    max_pixels: int | None = None  # images above this are problems (None: load_rgb's limit)

    def summary(self) -> str:
        n = len(self.problems)
        return "OK: no problems found" if n == 0 else f"{n} problem(s) found"


class _Sizes:
    """Image size statistics, and each image loaded once even when listed in several splits."""

    def __init__(self, report: CheckReport):
        self.report, self.sizes, self.seen = report, Counter(), {}

    def load(self, path: Path) -> tuple[int, int] | None:
        if path not in self.seen:
            try:
                size = load_rgb(path, self.report.max_pixels).size
                self.sizes[size] += 1
            except DatasetError as e:
                self.report.problems.append(str(e))
                size = None
            self.seen[path] = size
        return self.seen[path]

    def describe(self, indent: str = "  ") -> str:
        if not self.sizes:
            return f"{indent}image sizes: no readable image"
        n = sum(self.sizes.values())
        ws = [w for (w, _), c in self.sizes.items() for _ in range(c)]
        hs = [h for (_, h), c in self.sizes.items() for _ in range(c)]
        (cw, ch), cn = self.sizes.most_common(1)[0]
        return (
            f"{indent}image sizes ({n} images): width {min(ws)}..{max(ws)} (mean {sum(ws) / n:.1f}), "
            f"height {min(hs)}..{max(hs)} (mean {sum(hs) / n:.1f}), most common {cw}x{ch} ({cn})"
        )


def _guarded(report: CheckReport, fn, *args):
    try:
        return fn(*args)
    except DatasetError as e:
        report.problems.append(str(e))
        return None


def check_images(root: Path, report: CheckReport) -> None:
    report.lines.append(f"== plain image folder: {root}")
    paths = _guarded(report, list_images, root)
    sizes = _Sizes(report)
    for p in paths or []:
        sizes.load(p)
    report.lines += [f"  {len(paths or [])} images", sizes.describe()]


def check_imagefolder(root: Path, report: CheckReport) -> None:
    report.lines.append(f"== ImageFolder: {root}")
    classes = _guarded(report, find_classes, root) or []
    sizes = _Sizes(report)
    for c in classes:
        paths = [
            p for p in (root / c).rglob("*") if is_image_file(p) and not p.name.startswith(".")
        ]
        if not paths:
            report.problems.append(f"{root / c}: class folder holds no image")
        for p in sorted(paths):
            sizes.load(p)
        report.lines.append(f"  {c:<16} {len(paths):6d} images")
    report.lines += [f"  {len(classes)} classes, {len(sizes.seen)} images", sizes.describe()]


def _voc_splits(root: Path, task: str) -> list[str]:
    folder = root / "ImageSets" / task
    names = [p.stem for p in folder.glob("*.txt") if "_" not in p.stem] if folder.is_dir() else []
    order = {s: k for k, s in enumerate(("train", "val", "trainval", "test"))}
    return sorted(names, key=lambda s: (order.get(s, len(order)), s))


def check_voc(root: Path, report: CheckReport) -> None:
    report.lines.append(f"== VOC: {root}")
    classes = _guarded(report, read_classes, root)
    if classes is None:
        return
    report.lines.append(f"  {len(classes)} classes: {', '.join(classes)}")
    for sub in ("JPEGImages", "Annotations"):
        if not (root / sub).is_dir():
            report.problems.append(f"{root / sub}: folder missing")
    sizes, parsed = _Sizes(report), {}
    main_splits = _voc_splits(root, "Main")
    if not main_splits:
        report.problems.append(
            f"{root / 'ImageSets' / 'Main'}: no split file (train.txt, val.txt, ...)"
        )
    for split in main_splits:
        ids = _guarded(report, read_split, root, split, "Main") or []
        images, objects, difficult = Counter(), Counter(), Counter()
        for i in ids:
            if i not in parsed:
                parsed[i] = _guarded(
                    report, parse_annotation, root / "Annotations" / f"{i}.xml", classes
                )
                path = _guarded(report, find_image, root, i)
                size = sizes.load(path) if path else None
                ann = parsed[i]
                if ann is not None and size is not None and size != (ann.width, ann.height):
                    report.problems.append(
                        f"{path}: image is {size[0]}x{size[1]} but its annotation says {ann.width}x{ann.height}"
                    )
            ann = parsed[i]
            if ann is None:
                continue
            for name in set(ann.names):
                images[name] += 1
            objects.update(ann.names)
            difficult.update(n for n, d in zip(ann.names, ann.difficult, strict=True) if d)
        report.lines.append(
            f"  split {split}: {len(ids)} images, {sum(objects.values())} objects "
            f"({sum(difficult.values())} difficult)"
        )
        report.lines.append(f"    {'class':<16} {'images':>7} {'objects':>8} {'difficult':>9}")
        for c in classes:
            report.lines.append(f"    {c:<16} {images[c]:7d} {objects[c]:8d} {difficult[c]:9d}")
    for split in _voc_splits(root, "Segmentation"):
        ids = _guarded(report, read_split, root, split, "Segmentation") or []
        for i in ids:
            path = _guarded(report, find_image, root, i)
            size = sizes.load(path) if path else None
            mask = _guarded(
                report,
                load_segmentation_mask,
                root / "SegmentationClass" / f"{i}.png",
                len(classes),
            )
            if mask is not None and size is not None and mask.shape != (size[1], size[0]):
                report.problems.append(
                    f"{root / 'SegmentationClass' / (i + '.png')}: mask is {mask.shape[1]}x{mask.shape[0]} "
                    f"but the image is {size[0]}x{size[1]}"
                )
        report.lines.append(f"  segmentation split {split}: {len(ids)} images")
    report.lines.append(sizes.describe())


def check_coco(ann_file: Path, image_root: Path | None, report: CheckReport) -> None:
    report.lines.append(f"== COCO: {ann_file}")
    data = _guarded(report, _load_json, ann_file)
    if data is None:
        return
    bad = coco_problems(data, ann_file)
    report.problems += bad
    if bad:
        return
    image_root = image_root or guess_coco_images(ann_file)
    if image_root is None or not image_root.is_dir():
        report.problems.append(f"{ann_file}: image folder not found (pass --images ROOT)")
        return
    report.lines.append(f"  images from {image_root}")
    coco = coco_from_dict(data)
    sizes = _Sizes(report)
    for im in data["images"]:
        path = image_root / im["file_name"]
        size = sizes.load(path)
        if size is not None and size != (im["width"], im["height"]):
            report.problems.append(
                f"{path}: image is {size[0]}x{size[1]} but {ann_file} says {im['width']}x{im['height']}"
            )
    for ann in data["annotations"]:
        if ann.get("segmentation"):
            try:
                with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
                    warnings.simplefilter("ignore", DeprecationWarning)
                    coco.annToMask(ann)
            except Exception as e:  # pycocotools raises assorted errors for bad polygons/RLE
                report.problems.append(
                    f"{ann_file}: annotation id {ann['id']} has an unreadable segmentation ({e})"
                )
    per_cat = Counter(a["category_id"] for a in data["annotations"])
    crowd = sum(bool(a.get("iscrowd", 0)) for a in data["annotations"])
    report.lines.append(
        f"  {len(data['images'])} images, {len(data['annotations'])} annotations ({crowd} crowd)"
    )
    for cat in sorted(data["categories"], key=lambda c: c["id"]):
        report.lines.append(f"    {cat['name']:<16} {per_cat[cat['id']]:8d} annotations")
    report.lines.append(sizes.describe())


def check(
    path: str | Path, images: str | Path | None = None, max_pixels: int | None = None
) -> CheckReport:
    """Check the dataset(s) at `path`; `images` = image root for a COCO json (else guessed).
    An image larger than `max_pixels` (default `cebench.data.images.DEFAULT_MAX_PIXELS`) is a
    problem: its header is read, it is not decoded."""
    if max_pixels is not None and max_pixels < 1:
        raise DatasetError(f"--max-pixels must be >= 1, got {max_pixels}")
    path, report = Path(path), CheckReport(max_pixels=max_pixels)
    if not path.exists():
        report.problems.append(f"{path}: no such file or directory")
        return report
    image_root = Path(images) if images else None
    for kind, where in detect_layout(path):
        report.formats.append(kind)
        if kind == "synth":
            if not (where / "synth.json").is_file():
                report.problems.append(
                    f"{where / 'synth.json'}: missing (not written by `cebench data synth`?)"
                )
            for sub, fn in (("unlabelled", check_images), ("VOC", check_voc)):
                if (where / sub).is_dir():
                    fn(where / sub, report)
                else:
                    report.problems.append(f"{where / sub}: folder missing")
            for ann in sorted((where / "coco" / "annotations").glob("*.json")):
                check_coco(ann, where / "VOC" / "JPEGImages", report)
            for split in ("train", "val"):
                check_imagefolder(where / "imagefolder" / split, report)
        elif kind == "voc":
            check_voc(where, report)
        elif kind == "coco":
            check_coco(where, image_root, report)
        elif kind == "imagefolder":
            check_imagefolder(where, report)
        else:
            check_images(where, report)
    # a file shared by two views (VOC and COCO read the same JPEGs) is reported once
    report.problems = list(dict.fromkeys(report.problems))
    return report
