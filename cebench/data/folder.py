"""ImageFolder layout: one sub-folder per class, images anywhere below it.

    from cebench.data import ImageFolderDataset
    ds = ImageFolderDataset("data/builtin/imagefolder/train")
    img, label = ds[0]            # PIL RGB image, index into ds.classes

Classes are the sorted sub-folder names (as torchvision's ImageFolder); a class folder with no
image, or a root with no class folder, is an error rather than a silently smaller label set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cebench.core.errors import DatasetError
from cebench.data.images import IMAGE_EXTENSIONS, load_rgb
from cebench.data.listing import image_tree


def find_classes(root: str | Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `root`; DatasetError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"{root}: no class sub-folders (ImageFolder expects ROOT/<class>/<image>)"
        )
    return classes


class ImageFolderDataset:
    """`ds[i] -> (transform(img), class_index)`; `.classes`, `.samples` list of (path, index)."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        self.root = Path(root)
        self.classes = find_classes(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        # one listing of the whole root (cached for a large tree: cebench.data.listing), in the
        # order of the classes and, within one, of sorted(Path); loose files at the root skipped
        prefix = os.path.join(str(self.root), "")
        by_class: dict[str, list[Path]] = {c: [] for c in self.classes}
        for f in image_tree(self.root, IMAGE_EXTENSIONS):
            head, sep, _ = f[len(prefix) :].partition(os.sep)
            if sep and head in by_class:
                by_class[head].append(Path(f))
        self.samples: list[tuple[Path, int]] = []
        for c in self.classes:
            if not by_class[c]:
                raise DatasetError(
                    f"{self.root / c}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                )
            self.samples.extend((p, self.class_to_idx[c]) for p in by_class[c])
        self.targets = [t for _, t in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        img = load_rgb(path)
        return (self.transform(img) if self.transform is not None else img), target

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.root}, {len(self)} images, {len(self.classes)} classes)"
