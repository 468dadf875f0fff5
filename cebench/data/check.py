"""Validate a dataset folder: detect its format(s), print counts and sizes, list EVERY problem.

    cebench data check data/builtin                 # the synthetic root: all its parts
    cebench data check VOCdevkit/VOC2007            # a VOC root
    cebench data check instances_val.json --images val2017
    python -c "from cebench.data.check import check; print(check('data/builtin').problems)"

Formats, tried in this order: a `cebench data synth` root (synth.json or VOC/ + unlabelled/ ...),
a VOC root (JPEGImages/, Annotations/, ImageSets/ or SegmentationClass/; also VOCdevkit/VOC* and
the folder above VOCdevkit/; each VOC task's folders are checked for what that task reads:
`--task detection|segmentation` fails only what that task cannot read), a COCO instances
json (a file, or DIR/annotations/*.json), an ImageFolder (class sub-folders; also train/ val/
of those), and finally a plain folder of images. Unlike the readers, which stop at the first bad
file, the checker collects every problem so that one run shows everything to fix. Warnings
(boxes of zero area, classes no mask holds) are listed too but do not fail the check. Images are
read by `--workers` processes (default: the usable CPUs / concurrent jobs, cebench.core.threads).
"""

from __future__ import annotations

import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cebench.core.errors import DatasetError
from cebench.data.coco import _load_json, coco_from_dict, coco_problems
from cebench.data.folder import find_classes
from cebench.data.images import list_images, load_rgb
from cebench.data.layout import VOC_TASKS, detect_layout, guess_coco_images, voc_tasks
from cebench.data.voc import (
    IGNORE_INDEX,
    VOC_CLASSES,
    find_image,
    load_segmentation_mask,
    parse_annotation,
    read_classes,
    read_split,
)


@dataclass
class CheckReport:
    """What `check` found: `lines` to print (formats, counts, sizes), `problems` ("PATH: what")
    and `warnings` (suspicious but readable: they do not fail the check)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    max_pixels: int | None = None  # images above this are problems (None: load_rgb's limit)
    warnings: list[str] = field(default_factory=list)
    task: str | None = None  # "detection" | "segmentation": the VOC task the data is checked for
    workers: int = 1  # processes that read the images

    def summary(self) -> str:
        n = len(self.problems)
        said = f" ({len(self.warnings)} warning(s))" if self.warnings else ""
        return ("OK: no problems found" if n == 0 else f"{n} problem(s) found") + said


def _read_size(args: tuple[Path, int | None]) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) or (None, the problem) for one image: decoded in full, as training would."""
    path, max_pixels = args
    try:
        return load_rgb(path, max_pixels, cache=False).size, None
    except DatasetError as e:
        return None, str(e)


class _Sizes:
    """Image size statistics, and each image loaded once even when listed in several splits."""

    def __init__(self, report: CheckReport):
        self.report, self.sizes, self.seen = report, Counter(), {}

    def load_all(self, paths: list[Path]) -> None:
        """Read every image of `paths` not read yet, in `report.workers` processes (one when
        there are few); problems are listed in the order of `paths`."""
        todo = list(dict.fromkeys(p for p in paths if p not in self.seen))
        workers = min(self.report.workers, max(1, len(todo) // 64))
        if workers <= 1:
            for p in todo:
                self.load(p)
            return
        jobs = [(p, self.report.max_pixels) for p in todo]
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(
                _read_size, jobs, chunksize=max(1, min(256, len(todo) // (8 * workers)))
            )
            for p, (size, problem) in zip(todo, results, strict=True):
                if problem:
                    self.report.problems.append(problem)
                else:
                    self.sizes[size] += 1
                self.seen[p] = size

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
    sizes.load_all(paths or [])
    report.lines += [f"  {len(paths or [])} images", sizes.describe()]


def check_imagefolder(root: Path, report: CheckReport) -> None:
    report.lines.append(f"== ImageFolder: {root}")
    classes = _guarded(report, find_classes, root) or []
    sizes = _Sizes(report)
    per_class = {}
    for c in classes:
        try:
            per_class[c] = list_images(root / c)
        except DatasetError:
            per_class[c] = []
            report.problems.append(f"{root / c}: class folder holds no image")
    sizes.load_all([p for c in classes for p in per_class[c]])
    for c in classes:
        report.lines.append(f"  {c:<16} {len(per_class[c]):6d} images")
    report.lines += [f"  {len(classes)} classes, {len(sizes.seen)} images", sizes.describe()]


def _voc_splits(root: Path, task: str) -> list[str]:
    folder = root / "ImageSets" / task
    names = [p.stem for p in folder.glob("*.txt") if "_" not in p.stem] if folder.is_dir() else []
    order = {s: k for k, s in enumerate(("train", "val", "trainval", "test"))}
    return sorted(names, key=lambda s: (order.get(s, len(order)), s))


def _check_split_sums(root: Path, task: str, splits: list[str], report: CheckReport) -> None:
    """trainval.txt must list exactly the ids of train.txt and val.txt, which must not overlap."""
    if not {"train", "val", "trainval"} <= set(splits):
        return
    folder = root / "ImageSets" / task
    ids = {s: _guarded(report, read_split, root, s, task) for s in ("train", "val", "trainval")}
    if any(v is None for v in ids.values()):
        return
    train, val, trainval = (set(ids[s]) for s in ("train", "val", "trainval"))
    both = sorted(train & val)
    if both:
        report.problems.append(
            f"{folder}: train.txt and val.txt share {len(both)} id(s) (e.g. {', '.join(both[:3])})"
        )
    for what, extra in (
        (
            "trainval.txt lists {n} id(s) that are in neither train.txt nor val.txt",
            trainval - train - val,
        ),
        ("trainval.txt lacks {n} id(s) of train.txt or val.txt", (train | val) - trainval),
    ):
        if extra:
            report.problems.append(
                f"{folder}: {what.format(n=len(extra))} (e.g. {', '.join(sorted(extra)[:3])}); "
                "trainval must be train + val"
            )


def _task_lines(root: Path, report: CheckReport) -> list[str]:
    """Say what each VOC task can use; problems for the task asked for (report.task), or, without
    one, for a task whose own folders are half there, or when no task can read the root."""
    usable = []
    for task, missing in voc_tasks(root).items():
        own = [f for f in VOC_TASKS[task] if f != "JPEGImages"]
        if not missing:
            usable.append(task)
            report.lines.append(
                f"  {task}: readable ({', '.join(f + '/' for f in VOC_TASKS[task])})"
            )
            continue
        report.lines.append(f"  {task}: not readable (no {', '.join(f + '/' for f in missing)})")
        if report.task == task or (report.task is None and len(set(own) - set(missing)) > 0):
            report.problems += [f"{root / f}: folder missing (needed for {task})" for f in missing]
    if not usable and report.task is None:
        report.problems.append(
            f"{root}: no VOC task can read it (detection needs JPEGImages/, Annotations/, "
            "ImageSets/Main/; segmentation needs JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
        )
    return usable


def _check_boxes(path: Path, ann, report: CheckReport) -> None:
    """Warn on boxes of no width or height: VOC's xmin == xmax (1-based, inclusive) is one pixel
    wide, but the tools that write such boxes almost always meant an empty one."""
    for k, (name, (x1, y1, x2, y2)) in enumerate(zip(ann.names, ann.boxes, strict=True)):
        if x2 - x1 <= 1 or y2 - y1 <= 1:
            report.warnings.append(
                f"{path}: object {k} ({name}) box xmin={x1 + 1:g} ymin={y1 + 1:g} xmax={x2:g} "
                f"ymax={y2:g} has zero area as drawn (xmax == xmin or ymax == ymin; VOC reads it as "
                "one pixel wide)"
            )


def check_voc(root: Path, report: CheckReport) -> None:
    report.lines.append(f"== VOC: {root}")
    classes = _guarded(report, read_classes, root)
    if classes is None:
        return
    source = (
        "classes.txt"
        if (root / "classes.txt").is_file()
        else "the 20 VOC classes: no classes.txt"
        if classes == list(VOC_CLASSES)
        else "the names in Annotations/: no classes.txt"
    )
    report.lines.append(f"  {len(classes)} classes ({source}): {', '.join(classes)}")
    usable = _task_lines(root, report)
    sizes, parsed = _Sizes(report), {}
    main_splits = _voc_splits(root, "Main") if "detection" in usable else []
    if "detection" in usable and not main_splits:
        report.problems.append(
            f"{root / 'ImageSets' / 'Main'}: no split file (train.txt, val.txt, ...)"
        )
    if main_splits:
        _check_split_sums(root, "Main", main_splits, report)
    split_ids = {s: _guarded(report, read_split, root, s, "Main") or [] for s in main_splits}
    for ids in split_ids.values():  # the images first, in parallel
        sizes.load_all([p for p in (_guarded(report, find_image, root, i) for i in ids) if p])
    for split in main_splits:
        ids = split_ids[split]
        images, objects, difficult = Counter(), Counter(), Counter()
        for i in ids:
            if i not in parsed:
                xml = root / "Annotations" / f"{i}.xml"
                parsed[i] = _guarded(report, parse_annotation, xml, classes)
                path = _guarded(report, find_image, root, i)
                size = sizes.load(path) if path else None
                ann = parsed[i]
                if ann is not None:
                    _check_boxes(xml, ann, report)
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
    seg_splits = _voc_splits(root, "Segmentation") if "segmentation" in usable else []
    if seg_splits:
        _check_split_sums(root, "Segmentation", seg_splits, report)
    values, masks_read = Counter(), set()  # mask value -> masks holding it
    for split in seg_splits:
        ids = _guarded(report, read_split, root, split, "Segmentation") or []
        sizes.load_all([p for p in (_guarded(report, find_image, root, i) for i in ids) if p])
        for i in ids:
            path = _guarded(report, find_image, root, i)
            size = sizes.load(path) if path else None
            mask_path = root / "SegmentationClass" / f"{i}.png"
            # read with every value allowed, so the values found can be listed beside the classes
            mask = _guarded(report, load_segmentation_mask, mask_path, IGNORE_INDEX - 1)
            if mask is None:
                continue
            found = np.unique(mask).tolist()
            if i not in masks_read:  # an id of train and trainval counts once
                masks_read.add(i)
                values.update(found)
            bad = [v for v in found if v > len(classes) and v != IGNORE_INDEX]
            if bad:
                report.problems.append(
                    f"{mask_path}: mask values {bad[:10]} outside the class range 0..{len(classes)} (255 = ignore)"
                )
            if size is not None and mask.shape != (size[1], size[0]):
                report.problems.append(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} "
                    f"but the image is {size[0]}x{size[1]}"
                )
        report.lines.append(f"  segmentation split {split}: {len(ids)} images")
    if values:
        _mask_values(root, classes, values, report)
    report.lines.append(sizes.describe())


def _mask_values(root: Path, classes: list[str], values: Counter, report: CheckReport) -> None:
    """The mask values found beside the class list: a set read with the wrong names shows here."""
    named = ["background", *classes]

    def name(v: int) -> str:
        return "ignore" if v == IGNORE_INDEX else named[v] if v < len(named) else "NO CLASS"

    report.lines.append(
        "  mask values (masks holding each): "
        + ", ".join(f"{v} {name(v)} ({values[v]})" for v in sorted(values))
    )
    absent = [c for k, c in enumerate(classes, start=1) if k not in values]
    if absent:
        hint = (
            "; without classes.txt the 20 VOC names are assumed"
            if not (root / "classes.txt").is_file() and classes == list(VOC_CLASSES)
            else ""
        )
        report.warnings.append(
            f"{root / 'SegmentationClass'}: {len(absent)} of the {len(classes)} classes never occur "
            f"in a mask ({', '.join(absent[:8])}{', ...' if len(absent) > 8 else ''}){hint}"
        )


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
    path: str | Path,
    images: str | Path | None = None,
    max_pixels: int | None = None,
    task: str | None = None,
    workers: int = 1,
) -> CheckReport:
    """Check the dataset(s) at `path`; `images` = image root for a COCO json (else guessed).
    An image larger than `max_pixels` (default `cebench.data.images.DEFAULT_MAX_PIXELS`) is a
    problem: its header is read, it is not decoded. `task` ("detection" or "segmentation"): a VOC
    root fails only when that task cannot read it (None: when no task can, or a task's folders
    are half there). `workers`: processes that read the images."""
    if max_pixels is not None and max_pixels < 1:
        raise DatasetError(f"--max-pixels must be >= 1, got {max_pixels}")
    if task is not None and task not in VOC_TASKS:
        raise DatasetError(f"--task must be one of {', '.join(VOC_TASKS)}, got {task!r}")
    if workers < 1:
        raise DatasetError(f"--workers must be >= 1, got {workers}")
    path = Path(path)
    report = CheckReport(max_pixels=max_pixels, task=task, workers=workers)
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
    report.warnings = list(dict.fromkeys(report.warnings))
    return report
