"""COCO instances json (boxes and masks) through pycocotools.

    from cebench.data import CocoDetection
    ds = CocoDetection("data/builtin/VOC/JPEGImages", "data/builtin/coco/annotations/instances_val.json")
    img, target = ds[0]   # target: boxes xyxy, labels 1..C, difficult (= iscrowd), image_id, masks uint8[N,H,W]

The json is read and checked here (so a malformed file names its problem) before it is handed to
pycocotools; `ds.coco` is the `pycocotools.coco.COCO` object for COCOeval. Category ids are mapped
to contiguous labels 1..C in ascending id order; `ds.label_to_cat_id` maps them back.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.core.errors import DatasetError
from cebench.data.images import load_rgb


def _check_number_list(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, (int, float)) for v in value)
    )


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: malformed JSON ({e})") from None
    except RecursionError:
        raise DatasetError(f"{path}: malformed JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level is {type(data).__name__}, expected an object")
    return data


def coco_problems(data: dict[str, Any], path: str | Path) -> list[str]:
    """Every structural problem of a loaded instances json, each as "PATH: problem"."""
    bad: list[str] = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            bad.append(f"{path}: missing or non-list key {key!r}")
    if bad:
        return bad
    images: dict[Any, dict] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "width", "height"} <= im.keys():
            bad.append(f"{path}: images[{k}] needs id, file_name, width, height")
        elif im["id"] in images:
            bad.append(f"{path}: images[{k}] duplicates image id {im['id']!r}")
        elif not all(isinstance(im[s], int) and im[s] > 0 for s in ("width", "height")):
            bad.append(
                f"{path}: images[{k}] width/height {im['width']!r}x{im['height']!r} not positive integers"
            )
        else:
            images[im["id"]] = im
    cat_ids = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            bad.append(f"{path}: categories[{k}] needs id and name")
        else:
            cat_ids.add(cat["id"])
    if not data["categories"]:
        bad.append(f"{path}: no categories")
    for k, ann in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict) or not {"id", "image_id", "category_id", "bbox"} <= ann.keys():
            bad.append(f"{path}: {where} needs id, image_id, category_id, bbox")
            continue
        where = f"annotations[{k}] (id {ann['id']})"
        if ann["category_id"] not in cat_ids:
            bad.append(f"{path}: {where} has unknown category_id {ann['category_id']!r}")
        seg = ann.get("segmentation")
        if seg is not None and not isinstance(seg, (list, dict)):
            bad.append(f"{path}: {where} segmentation must be polygons (list) or RLE (dict)")
        if not _check_number_list(ann["bbox"], 4):
            bad.append(f"{path}: {where} bbox {ann['bbox']!r} is not [x, y, w, h]")
            continue
        x, y, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            bad.append(f"{path}: {where} bbox {ann['bbox']} has non-positive width or height")
        im = images.get(ann["image_id"])
        if im is None:
            bad.append(f"{path}: {where} refers to unknown image_id {ann['image_id']!r}")
        elif x < 0 or y < 0 or x + w > im["width"] + 1e-3 or y + h > im["height"] + 1e-3:
            bad.append(
                f"{path}: {where} bbox {ann['bbox']} lies outside the {im['width']}x{im['height']} image"
            )
    return bad


def read_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Load an instances json and check its structure; DatasetError names the file and the problem."""
    path = Path(ann_file)
    data = _load_json(path)
    bad = coco_problems(data, path)
    if bad:
        more = (
            f" (and {len(bad) - 1} more problem(s); run `cebench data check`)"
            if len(bad) > 1
            else ""
        )
        raise DatasetError(bad[0] + more)
    return data


def coco_from_dict(data: dict[str, Any]):
    """A pycocotools COCO object built from an in-memory dict, without its progress prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDetection:
    """COCO instances: `ds[i] -> (img, target)` as VOCDetection plus "masks" uint8[N,H,W].

    "difficult" is the annotation's `iscrowd` flag (COCO evaluation ignores crowd regions).
    `image_id` is the COCO image id. Images without annotations are kept (empty targets).
    """

    def __init__(
        self, image_root: str | Path, ann_file: str | Path, transforms: Callable | None = None
    ):
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise DatasetError(f"{self.image_root}: COCO image root not found")
        self.ann_file = Path(ann_file)
        self.coco = coco_from_dict(read_coco_json(self.ann_file))
        cats = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.classes = [c["name"] for c in cats]
        self.label_to_cat_id = {i + 1: c["id"] for i, c in enumerate(cats)}
        self.cat_id_to_label = {v: k for k, v in self.label_to_cat_id.items()}
        self.ids = sorted(self.coco.imgs)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.image_root / self.coco.imgs[self.ids[index]]["file_name"]

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        img = load_rgb(self.image_path(index))
        if img.size != (info["width"], info["height"]):
            raise DatasetError(
                f"{self.image_path(index)}: image is {img.size[0]}x{img.size[1]} but {self.ann_file} says "
                f"{info['width']}x{info['height']}"
            )
        anns = self.coco.imgToAnns.get(image_id, [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float32).reshape(-1, 4)  # fmt: skip
        masks = np.zeros((len(anns), info["height"], info["width"]), dtype=np.uint8)
        for k, a in enumerate(anns):
            if a.get("segmentation"):
                try:
                    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
                        warnings.simplefilter("ignore", DeprecationWarning)
                        masks[k] = self.coco.annToMask(a)
                except Exception as e:  # pycocotools raises assorted errors for bad polygons/RLE
                    raise DatasetError(
                        f"{self.ann_file}: annotation id {a['id']} has an unreadable segmentation ({e})"
                    ) from None
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor(
                [self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "difficult": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            "image_id": image_id,
            "masks": torch.from_numpy(masks),
        }
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def __repr__(self) -> str:
        return f"CocoDetection({self.ann_file}, {len(self)} images, {len(self.classes)} classes)"
