"""`cebench transfer classify|detect|segment`: dispatch to each harness's own parser and main.

    cebench transfer classify --encoder runs/ce/encoder.pt --data data/builtin/VOC --protocol linear --out runs/cls
    cebench transfer classify --encoder random-rescaled:tiny --data data/builtin/imagefolder --protocol knn --preset small --out runs/knn
    cebench transfer detect --encoder runs/ce --data data/builtin/VOC --frozen --preset small --out runs/det
    cebench transfer detect --encoder hub:timm/resnet18 --coco-ann data/builtin/coco/annotations/instances_train.json \\
        --coco-images data/builtin/VOC/JPEGImages --preset small --out runs/det-coco
    cebench transfer segment --encoder random:alexnet --data data/builtin/VOC --preset small --out runs/seg

Every run writes OUT/metrics.json (metrics, resolved config, seed, wall time, device, encoder),
OUT/config.yaml, OUT/log.jsonl (training loss per epoch) and OUT/model.pt.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

HARNESSES = {
    "classify": (
        "cebench.transfer.classify",
        "linear probe per layer, kNN or fine-tuning; top-1 or VOC mAP",
    ),
    "detect": (
        "cebench.transfer.detect",
        "Faster R-CNN on the encoder (FPN or Fast R-CNN-style c4 head); VOC07 mAP, COCO AP",
    ),
    "segment": (
        "cebench.transfer.segment",
        "FCN on the encoder (FCN-32s fc6/fc7 option); mean IU at original size",
    ),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cebench transfer",
        description="Transfer an encoder to classification, detection or segmentation.",
        epilog="examples:\n"
        + "\n".join(line for line in __doc__.splitlines()[1:9] if line.strip()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="task", required=True, metavar="{classify,detect,segment}")
    for task, (module, help_) in HARNESSES.items():
        parents = [importlib.import_module(module).get_args_parser(add_help=False)]
        sub.add_parser(
            task,
            parents=parents,
            help=help_,
            description=help_,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=importlib.import_module(module).__doc__.split("\n\n")[1],
        )
    return p


def main(args: argparse.Namespace) -> int:
    from cebench.core.lock import FolderLock

    # one writer per --out; a file, an unwritable folder or one overlapping the data or the
    # encoder's file or run folder is refused before any work
    encoder = str(getattr(args, "encoder", "") or "")
    encoder = encoder[len("hub:") :] if encoder.startswith("hub:") else encoder
    inputs = {"--data": getattr(args, "data", None)}
    if encoder and Path(encoder).exists():
        inputs["--encoder"] = encoder
    with FolderLock(args.out, f"cebench transfer {args.task}", inputs=inputs):
        return importlib.import_module(HARNESSES[args.task][0]).main(args)
