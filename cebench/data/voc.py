"""PASCAL VOC 2007/2012 layout: classification, detection and segmentation readers.

    from cebench.data import VOCClassification, VOCDetection, VOCSegmentation
    cls = VOCClassification("data/builtin/VOC", "train")   # (img, labels[C], ignore[C])
    det = VOCDetection("VOCdevkit/VOC2007", "test")         # (img, {"boxes", "labels", ...})
    seg = VOCSegmentation("VOCdevkit/VOC2012", "val")       # (img, mask int64[H,W], 255 = ignore)

Layout: ROOT/JPEGImages/<id>.jpg, ROOT/Annotations/<id>.xml, ROOT/SegmentationClass/<id>.png,
ROOT/ImageSets/{Main,Segmentation}/<split>.txt, optional ROOT/classes.txt (else the classes the
annotations name, sorted, when one of them is not a VOC class; else the 20 VOC classes).

Box convention: VOC `bndbox` is 1-based and inclusive (xmin..xmax are pixel indices); boxes are
returned 0-based xyxy in continuous pixel coordinates, x1 = xmin - 1, x2 = xmax (as detectron2's
VOC loader), so a box covering pixel columns 0..9 is [0, 10). Annotations are parsed (and checked)
when the dataset is built, so a broken file fails at once with its name, not mid-epoch.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.data.images import IMAGE_EXTENSIONS, cached_read, file_key, load_rgb

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
IGNORE_INDEX = 255


def read_classes(voc_root: str | Path) -> list[str]:
    """Class names from `<voc_root>/classes.txt` (one per line) if present; else, when the
    Annotations/ name a class outside the 20 VOC classes, the sorted names found there
    (`annotation_classes`); else the 20 VOC classes."""
    path = Path(voc_root) / "classes.txt"
    if not path.is_file():
        found = annotation_classes(voc_root)
        return found if found and not set(found) <= set(VOC_CLASSES) else list(VOC_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: empty class list")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path}: duplicate class name(s) {dup}")
    if len(names) >= IGNORE_INDEX:
        raise DatasetError(
            f"{path}: {len(names)} classes; at most {IGNORE_INDEX - 1} fit a VOC mask"
        )
    return names


_NAMES_CACHE: dict[tuple, list[str]] = {}


def annotation_classes(voc_root: str | Path) -> list[str]:
    """Sorted object names found in `<voc_root>/Annotations/*.xml` ([] without that folder);
    a file that does not parse is skipped here (the readers and `data check` name it). Kept per
    process until the folder changes (its mtime)."""
    folder = Path(voc_root) / "Annotations"
    try:
        key = (str(folder.resolve()), folder.stat().st_mtime_ns)
    except OSError:
        return []
    if key not in _NAMES_CACHE:
        names = set()
        for xml in folder.glob("*.xml"):
            try:
                root = ET.parse(xml).getroot()
            except (ET.ParseError, OSError):
                continue
            names.update((n.text or "").strip() for n in root.iterfind("object/name"))
        names.discard("")
        _NAMES_CACHE[key] = sorted(names)
    return list(_NAMES_CACHE[key])


def read_split(voc_root: str | Path, split: str, task: str = "Main") -> list[str]:
    """Image ids listed in `ImageSets/<task>/<split>.txt` (first token of each line)."""
    folder = Path(voc_root) / "ImageSets" / task
    path = folder / f"{split}.txt"
    if not path.is_file():
        have = (
            sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem)
            if folder.is_dir()
            else []
        )
        raise DatasetError(f"{path}: split file not found (available splits: {have or 'none'})")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split file lists no image id")
    return ids


@dataclass
class VOCAnnotation:
    """One parsed Annotations/<id>.xml. boxes: float32[N,4] 0-based xyxy; labels: int64[N] in 1..C."""

    filename: str
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def _number_field(node: ET.Element, tag: str, path: Path, where: str, whole: bool = False) -> float:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{path}: {where} has no <{tag}>")
    text = child.text.strip()
    try:
        # some VOC 2012 (and user-made) files write coordinates as floats ("273.0", "48.5")
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}: {where} <{tag}> is not a number: {text!r}") from None
    if not np.isfinite(value) or (whole and value != int(value)):
        raise DatasetError(
            f"{path}: {where} <{tag}> is not a {'whole ' if whole else ''}number: {text!r}"
        )
    return value


def parse_annotation(xml_path: str | Path, classes: list[str]) -> VOCAnnotation:
    """Parse and check one VOC annotation file; DatasetError names the file and the problem."""
    path = Path(xml_path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path}: malformed XML ({e})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: no <size> element")
    width = int(_number_field(size, "width", path, "<size>", whole=True))
    height = int(_number_field(size, "height", path, "<size>", whole=True))
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: image size {width}x{height} is not positive")
    cls_index = {c: i + 1 for i, c in enumerate(classes)}
    names, boxes, labels, difficult = [], [], [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        name_node = obj.find("name")
        name = (name_node.text or "").strip() if name_node is not None else ""
        if not name:
            raise DatasetError(f"{path}: {where} has no <name>")
        if name not in cls_index:
            raise DatasetError(
                f"{path}: {where} has unknown class {name!r} (known: {', '.join(classes)})"
            )
        where = f"object {k} ({name})"
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: {where} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number_field(bb, t, path, where) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            raise DatasetError(
                f"{path}: {where} box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is empty (xmax < xmin or ymax < ymin)"
            )
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise DatasetError(
                f"{path}: {where} box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} lies outside the "
                f"{width}x{height} image (VOC boxes are 1-based: 1 <= xmin <= xmax <= width)"
            )
        diff_node = obj.find("difficult")
        diff_text = (diff_node.text or "0").strip() if diff_node is not None else "0"
        if diff_text not in ("0", "1"):
            raise DatasetError(f"{path}: {where} <difficult> is {diff_text!r}, expected 0 or 1")
        names.append(name)
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        labels.append(cls_index[name])
        difficult.append(diff_text == "1")
    filename_node = root.find("filename")
    return VOCAnnotation(
        filename=(filename_node.text or "").strip() if filename_node is not None else "",
        width=width,
        height=height,
        names=names,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )


def load_segmentation_mask(path: str | Path, num_classes: int) -> np.ndarray:
    """Read a SegmentationClass PNG (palette or grayscale indices) as int64[H,W]; 255 = ignore.

    Raises DatasetError for a colour (RGB) mask or any value outside 0..num_classes other than 255.
    Decoded masks are cached per process like images (`cebench.data.images.cached_read`).
    """
    path = Path(path)
    key = file_key(path, ("segmentation", num_classes))
    if key is None:
        raise DatasetError(f"{path}: segmentation mask not found")
    # kept as uint8 (P and L masks hold 0..255): an eighth of the int64 array's memory
    small = cached_read(
        key, lambda: _read_mask(path, num_classes).astype(np.uint8), lambda m: m.nbytes
    )
    return small.astype(np.int64)


def _read_mask(path: Path, num_classes: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise DatasetError(
                    f"{path}: segmentation mask has mode {im.mode}; expected a palette (P) or grayscale (L) "
                    "PNG of class indices"
                )
            mask = np.asarray(im, dtype=np.int64)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(
            f"{path}: cannot read segmentation mask ({type(e).__name__}: {e})"
        ) from None
    bad = np.unique(mask[(mask > num_classes) & (mask != IGNORE_INDEX)])
    if bad.size:
        raise DatasetError(
            f"{path}: mask values {bad.tolist()[:10]} outside the class range 0..{num_classes} (255 = ignore)"
        )
    return mask


def find_image(voc_root: Path, image_id: str) -> Path:
    """JPEGImages/<id>.jpg, or the same id with another image extension."""
    folder = voc_root / "JPEGImages"
    for ext in (".jpg", *IMAGE_EXTENSIONS):
        p = folder / f"{image_id}{ext}"
        if p.is_file():
            return p
    raise DatasetError(f"{folder / (image_id + '.jpg')}: image listed in the split but not found")


class _VOCBase:
    task = "Main"

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: VOC root not found")
        self.split = split
        self.classes = read_classes(self.root)
        self.ids = read_split(self.root, split, self.task)
        self.images = [find_image(self.root, i) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self) -> list[VOCAnnotation]:
        return [
            parse_annotation(self.root / "Annotations" / f"{i}.xml", self.classes) for i in self.ids
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root}, split={self.split!r}, {len(self)} images)"


class VOCClassification(_VOCBase):
    """Multi-label classification: `ds[i] -> (img, labels float32[C], ignore bool[C])`.

    labels[c] = 1 if any object of class c is annotated; ignore[c] = every such object is
    `difficult` (the VOC classification protocol scores those images as neither positive nor negative).
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None):
        super().__init__(root, split)
        self.transform = transform
        C = len(self.classes)
        self.labels = np.zeros((len(self.ids), C), dtype=np.float32)
        self.ignore = np.zeros((len(self.ids), C), dtype=bool)
        for n, ann in enumerate(self._annotations()):
            self.labels[n, ann.labels - 1] = 1.0
            easy = {int(lab) for lab, d in zip(ann.labels, ann.difficult, strict=True) if not d}
            for lab in set(ann.labels.tolist()) - easy:
                self.ignore[n, lab - 1] = True

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        img = load_rgb(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return (
            img,
            torch.from_numpy(self.labels[index].copy()),
            torch.from_numpy(self.ignore[index].copy()),
        )


class VOCDetection(_VOCBase):
    """Detection: `ds[i] -> (img, {"boxes" float32[N,4] xyxy, "labels" int64[N] 1..C, "difficult", "image_id"})`.

    `image_id` is the index in `.ids`; `transforms(img, target) -> (img, target)` if given.
    """

    def __init__(self, root: str | Path, split: str, transforms: Callable | None = None):
        super().__init__(root, split)
        self.transforms = transforms
        self.annotations = self._annotations()

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        img = load_rgb(self.images[index])
        ann = self.annotations[index]
        if img.size != (ann.width, ann.height):
            raise DatasetError(
                f"{self.images[index]}: image is {img.size[0]}x{img.size[1]} but its annotation says "
                f"{ann.width}x{ann.height}"
            )
        target = {
            "boxes": torch.from_numpy(ann.boxes.copy()),
            "labels": torch.from_numpy(ann.labels.copy()),
            "difficult": torch.from_numpy(ann.difficult.copy()),
            "image_id": index,
        }
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


class VOCSegmentation(_VOCBase):
    """Semantic segmentation: `ds[i] -> (img, mask int64[H,W])`, 0 = background, 1..C, 255 = ignore."""

    task = "Segmentation"

    def __init__(self, root: str | Path, split: str, transforms: Callable | None = None):
        super().__init__(root, split)
        self.transforms = transforms
        self.masks = [self.root / "SegmentationClass" / f"{i}.png" for i in self.ids]
        missing = [str(m) for m in self.masks if not m.is_file()]
        if missing:
            raise DatasetError(
                f"{missing[0]}: segmentation mask not found ({len(missing)} missing in split {split!r})"
            )

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = load_rgb(self.images[index])
        mask = load_segmentation_mask(self.masks[index], len(self.classes))
        if mask.shape != (img.size[1], img.size[0]):
            raise DatasetError(
                f"{self.masks[index]}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{img.size[0]}x{img.size[1]}"
            )
        target = torch.from_numpy(mask)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target
