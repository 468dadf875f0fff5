"""Dataset readers and the built-in synthetic dataset.

    from cebench.data import list_images, load_rgb, ImageFiles, ImageFolderDataset
    from cebench.data import VOCClassification, VOCDetection, VOCSegmentation, CocoDetection

    cebench data synth --out data/builtin     # write the built-in dataset
    cebench data check data/builtin           # validate any supported layout, list every problem

Readers return PIL RGB images when no transform is given; every bad input raises
`cebench.core.errors.DatasetError` naming the file and the problem.
"""

from cebench.data.coco import CocoDetection
from cebench.data.folder import ImageFolderDataset
from cebench.data.images import IMAGE_EXTENSIONS, ImageFiles, list_images, load_rgb
from cebench.data.voc import (
    VOC_CLASSES,
    VOCClassification,
    VOCDetection,
    VOCSegmentation,
    read_classes,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VOC_CLASSES",
    "CocoDetection",
    "ImageFiles",
    "ImageFolderDataset",
    "VOCClassification",
    "VOCDetection",
    "VOCSegmentation",
    "list_images",
    "load_rgb",
    "read_classes",
]
