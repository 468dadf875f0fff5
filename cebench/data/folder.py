"""ImageFolder layout: one sub-folder per class, images anywhere below it.

    from cebench.data import ImageFolderDataset
    ds = ImageFolderDataset("data/builtin/imagefolder/train")
    img, label = ds[0]            # PIL RGB image, index into ds.classes

Classes are the sorted sub-folder names (as torchvision's ImageFolder); a class folder with no
image, or a root with no class folder, is an error rather than a silently smaller label set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cebench.core.errors import DatasetError
from cebench.data.images import IMAGE_EXTENSIONS, list_images, load_rgb


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
        self.samples: list[tuple[Path, int]] = []
        for c in self.classes:
            try:
                paths = list_images(self.root / c)
            except DatasetError:
                raise DatasetError(
                    f"{self.root / c}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                ) from None
            self.samples.extend((p, self.class_to_idx[c]) for p in paths)
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
