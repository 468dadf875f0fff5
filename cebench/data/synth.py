"""Write the built-in synthetic dataset (unlabelled + VOC + COCO + ImageFolder) from a seed.

    cebench data synth --out data/builtin                  # defaults: 64 px, seed 0
    python -c "from cebench.data.synth import generate; generate('data/tiny', size=32, images=24)"

Layout (see README "Built-in data"):

    OUT/unlabelled/*.png                    pretraining split, no labels
    OUT/VOC/JPEGImages/*.jpg, Annotations/*.xml, SegmentationClass/*.png (palette, 255 = border)
    OUT/VOC/ImageSets/Main/{train,val,trainval}.txt + <class>_<split>.txt, ImageSets/Segmentation/*.txt
    OUT/VOC/classes.txt
    OUT/coco/annotations/instances_{train,val}.json   same objects, file_name relative to VOC/JPEGImages
    OUT/imagefolder/{train,val}/<class>/*.png          one dominant object per image
    OUT/synth.json                                     seed, size, counts, classes, statistics

Every image is drawn from its own numpy Generator seeded by (seed, stream, index), so the output
is byte-identical for a seed whatever the number of worker processes. The set is written into a
hidden sibling folder and renamed into place at the end: an interrupted run leaves no half dataset.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.data.scenes import CLASSES, Scene, render_dead_leaves, render_scene

SYNTH_FORMAT = "cebench-synth/1"
UNLABELLED_STYLES = ("scenes", "dead-leaves")
_RADIUS = (0.09, 0.28)  # object radius range of VOC / unlabelled scenes, fraction of the side
_STREAMS = {"unlabelled": 0, "voc": 1, "imagefolder": 2}


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS[stream], index)))


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 RGB entries; 255 = (224, 224, 192)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


_PALETTE = voc_palette()


def annotation_xml(image_id: str, size: int, scene: Scene) -> str:
    """VOC-style XML; boxes written 1-based inclusive (xmin = x1 + 1, xmax = x2)."""
    objs = []
    for o in scene.objects:
        x1, y1, x2, y2 = o.box
        objs.append(
            f"  <object>\n    <name>{o.name}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>{int(o.truncated)}</truncated>\n    <difficult>{int(o.difficult)}</difficult>\n"
            f"    <bndbox>\n      <xmin>{x1 + 1}</xmin>\n      <ymin>{y1 + 1}</ymin>\n"
            f"      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n    </bndbox>\n  </object>\n"
        )
    return (
        f"<annotation>\n  <folder>VOC</folder>\n  <filename>{image_id}.jpg</filename>\n"
        "  <source>\n    <database>cebench synthetic</database>\n  </source>\n"
        f"  <size>\n    <width>{size}</width>\n    <height>{size}</height>\n    <depth>3</depth>\n  </size>\n"
        "  <segmented>1</segmented>\n" + "".join(objs) + "</annotation>\n"
    )


def _radius(scale: float) -> tuple[float, float]:
    return (_RADIUS[0] * scale, _RADIUS[1] * scale)


def voc_scene(seed: int, index: int, size: int, object_scale: float = 1.0) -> Scene:
    """The scene of VOC image `index` (1 to 4 objects); also used by tests to check the readers."""
    rng = _rng(seed, "voc", index)
    return render_scene(rng, size, int(rng.integers(1, 5)), radius=_radius(object_scale))


def unlabelled_scene(
    seed: int, index: int, size: int, style: str = "scenes", object_scale: float = 1.0
) -> Scene:
    """A pretraining image: a VOC-like scene, or a dead-leaves scene (`render_dead_leaves`)."""
    rng = _rng(seed, "unlabelled", index)
    if style == "dead-leaves":
        return render_dead_leaves(rng, size)
    return render_scene(rng, size, int(rng.integers(1, 5)), radius=_radius(object_scale))


def folder_scene(seed: int, index: int, size: int) -> Scene:
    """One large object of class index % C on top of 0-2 small distractors of other classes."""
    rng = _rng(seed, "imagefolder", index)
    label = index % len(CLASSES) + 1
    others = [c for c in range(1, len(CLASSES) + 1) if c != label]
    distract = [int(c) for c in rng.choice(others, size=int(rng.integers(0, 3)), replace=False)]
    return render_scene(
        rng, size, len(distract) + 1, labels=distract + [label], radius=(0.08, 0.16), dominant=True
    )


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _write_voc(job: tuple[Path, int, int, int, float]) -> dict[str, Any]:
    root, seed, index, size, scale = job
    image_id = f"{index + 1:06d}"
    scene = voc_scene(seed, index, size, scale)
    Image.fromarray(scene.image).save(
        root / "JPEGImages" / f"{image_id}.jpg", quality=95, subsampling=0
    )  # 4:4:4: tiny images keep their colours
    mask = Image.fromarray(scene.voc_mask(), mode="P")
    mask.putpalette(_PALETTE)
    mask.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, size, scene))
    objects = [
        {"label": o.label, "box": list(o.box), "area": o.area, "difficult": o.difficult,
         "truncated": o.truncated, "rle": _rle(scene.instances == k)}
        for k, o in enumerate(scene.objects)
    ]  # fmt: skip
    return {"id": image_id, "objects": objects}


def _write_unlabelled(job: tuple[Path, int, int, int, str, float]) -> int:
    root, seed, index, size, style, scale = job
    scene = unlabelled_scene(seed, index, size, style, scale)
    Image.fromarray(scene.image).save(root / f"{index:06d}.png")
    return len(scene.objects)


def _write_folder(job: tuple[Path, int, int, int, str]) -> int:
    root, seed, index, size, split = job
    scene = folder_scene(seed, index, size)
    name = CLASSES[index % len(CLASSES)]
    Image.fromarray(scene.image).save(root / split / name / f"{index:06d}.png")
    return len(scene.objects)


def _coco_json(records: list[dict[str, Any]], size: int) -> dict[str, Any]:
    images, anns = [], []
    for rec in records:
        image_id = int(rec["id"])
        images.append(
            {"id": image_id, "file_name": f"{rec['id']}.jpg", "width": size, "height": size}
        )
        for o in rec["objects"]:
            x1, y1, x2, y2 = o["box"]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": o["label"],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": o["area"], "iscrowd": 0,
                         "segmentation": o["rle"]})  # fmt: skip
    cats = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]
    return {"info": {"description": "cebench synthetic shapes"}, "images": images, "annotations": anns,
            "categories": cats}  # fmt: skip


def _write_image_sets(voc: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
    for task in ("Main", "Segmentation"):
        (voc / "ImageSets" / task).mkdir(parents=True, exist_ok=True)
    splits = {**splits, "trainval": splits["train"] + splits["val"]}
    for split, recs in splits.items():
        ids = "".join(f"{r['id']}\n" for r in recs)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(ids)
        for c, name in enumerate(CLASSES, start=1):
            lines = []
            for r in recs:
                diff = [o["difficult"] for o in r["objects"] if o["label"] == c]
                flag = (
                    -1 if not diff else (0 if all(diff) else 1)
                )  # VOC: 0 = only difficult objects
                lines.append(f"{r['id']} {flag:2d}\n")
            (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(lines))


def _statistics(records: list[dict[str, Any]], size: int) -> dict[str, Any]:
    objs = [o for r in records for o in r["objects"]]
    per_image = [len(r["objects"]) for r in records]
    areas = np.array([o["area"] for o in objs], dtype=float) / (size * size)
    return {
        "objects_per_image": {"mean": round(float(np.mean(per_image)), 3), "min": min(per_image),
                              "max": max(per_image)},
        "objects_per_class": {c: sum(o["label"] == i + 1 for o in objs) for i, c in enumerate(CLASSES)},
        "images_per_class": {c: sum(any(o["label"] == i + 1 for o in r["objects"]) for r in records)
                             for i, c in enumerate(CLASSES)},
        "difficult_objects": sum(o["difficult"] for o in objs),
        "truncated_objects": sum(o["truncated"] for o in objs),
        "visible_area_fraction": {"mean": round(float(areas.mean()), 4), "min": round(float(areas.min()), 4),
                                  "max": round(float(areas.max()), 4)},
    }  # fmt: skip


def _run(fn, jobs: list, workers: int) -> list:
    if workers <= 1 or len(jobs) < 64:
        return [fn(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=max(8, len(jobs) // (workers * 8)))


# what `generate` writes at the top of its folder (and all --force replaces)
SYNTH_ENTRIES = frozenset({"VOC", "coco", "imagefolder", "unlabelled", "synth.json"})


def generate(
    out: str | Path,
    seed: int = 0,
    size: int = 64,
    images: int = 2000,
    unlabelled: int = 2000,
    folder_images: int = 1200,
    workers: int | None = None,
    force: bool = False,
    unlabelled_style: str = "scenes",
    object_scale: float = 1.0,
) -> dict[str, Any]:
    """Write the dataset to `out` and return the content of synth.json.

    images: VOC images (first half train, second half val); unlabelled: pretraining images;
    folder_images: ImageFolder images (80% train, 20% val, classes balanced).
    unlabelled_style: "scenes" (1-4 objects on a background, as the VOC images) or "dead-leaves"
    (`render_dead_leaves`: textured shapes covering the image, occluding each other).
    object_scale: multiplies the object radii (0.09-0.28 of the side) of VOC and unlabelled
    scenes; ImageFolder images keep their large dominant object.
    """
    out = Path(out)
    if size < 16:
        raise DatasetError(f"--size {size}: images must be at least 16 px")
    if images < 2 or unlabelled < 0 or folder_images < 2 * len(CLASSES):
        raise DatasetError(
            f"need --images >= 2 (got {images}), --unlabelled >= 0 (got {unlabelled}) and "
            f"--folder-images >= {2 * len(CLASSES)} (got {folder_images})"
        )
    if unlabelled_style not in UNLABELLED_STYLES:
        raise DatasetError(
            f"unlabelled style {unlabelled_style!r}: expected one of {', '.join(UNLABELLED_STYLES)}"
        )
    if not 0.2 <= object_scale <= 2.5:
        raise DatasetError(f"object scale {object_scale}: expected 0.2 to 2.5")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DatasetError(
                f"{out}: output folder exists and is not empty (use --force to replace it)"
            )
        if not (out / "synth.json").is_file():
            raise DatasetError(
                f"{out}: not a folder written by `cebench data synth`; refusing to replace it"
            )
        foreign = sorted(p.name for p in out.iterdir() if p.name not in SYNTH_ENTRIES)
        if foreign:  # --force replaces only what synth wrote
            raise DatasetError(
                f"{out}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                "not written by `cebench data synth`; refusing to replace it (--force never "
                "deletes files cebench did not write)"
            )
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
    try:
        voc = tmp / "VOC"
        for sub in ("JPEGImages", "Annotations", "SegmentationClass"):
            (voc / sub).mkdir(parents=True)
        (tmp / "unlabelled").mkdir()
        n_folder_val = max(len(CLASSES), round(folder_images * 0.2))
        folder_split = [
            "train" if i < folder_images - n_folder_val else "val" for i in range(folder_images)
        ]
        for split in ("train", "val"):
            for name in CLASSES:
                (tmp / "imagefolder" / split / name).mkdir(parents=True)
        (voc / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))

        records = _run(
            _write_voc, [(voc, seed, i, size, object_scale) for i in range(images)], workers
        )
        n_unl = _run(
            _write_unlabelled,
            [
                (tmp / "unlabelled", seed, i, size, unlabelled_style, object_scale)
                for i in range(unlabelled)
            ],
            workers,
        )
        _run(
            _write_folder,
            [(tmp / "imagefolder", seed, i, size, folder_split[i]) for i in range(folder_images)],
            workers,
        )

        n_train = (images + 1) // 2
        splits = {"train": records[:n_train], "val": records[n_train:]}
        _write_image_sets(voc, splits)
        (tmp / "coco" / "annotations").mkdir(parents=True)
        for split, recs in splits.items():
            text = json.dumps(_coco_json(recs, size), separators=(",", ":"))
            (tmp / "coco" / "annotations" / f"instances_{split}.json").write_text(text)
        info = {
            "format": SYNTH_FORMAT,
            "seed": seed,
            "size": size,
            "unlabelled_style": unlabelled_style,
            "object_scale": object_scale,
            "classes": list(CLASSES),
            "counts": {
                "unlabelled": unlabelled,
                "VOC": {"train": n_train, "val": images - n_train},
                "imagefolder": {
                    "train": folder_split.count("train"),
                    "val": folder_split.count("val"),
                },
            },
            "statistics": {
                "VOC": _statistics(records, size),
                "unlabelled_objects_per_image": round(float(np.mean(n_unl)), 3) if n_unl else 0.0,
            },
        }
        (tmp / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / "old")
            shutil.rmtree(trash)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def builtin_reason(path: str | Path | None) -> str | None:
    """Why `path` looks like (part of) the built-in synthetic set, or None.

    A synth.json of this format in `path` or one of its two parents, or a VOC layout
    (JPEGImages/) whose first image is 64 px or smaller: the sizes the built-in set is made at.
    """
    if not path:
        return None
    p = Path(path)
    for d in [p, *list(p.parents)[:2]]:
        info = d / "synth.json"
        if info.is_file():
            try:
                fmt = json.loads(info.read_text()).get("format")
            except (OSError, ValueError, AttributeError):
                continue
            if fmt == SYNTH_FORMAT:
                return f"{info} is there"
    images = p / "JPEGImages" if (p / "JPEGImages").is_dir() else p
    if images.is_dir() and images.name == "JPEGImages":
        first = next(iter(sorted(images.glob("*.jpg"))[:1]), None)
        if first is not None:
            try:
                with Image.open(first) as im:
                    w, h = im.size
            except OSError:
                return None
            if max(w, h) <= 64:
                return f"its images are {w}x{h} px ({first.name})"
    return None
