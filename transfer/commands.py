"""`cebench transfer <task>`: one subcommand per registered task (cebench.transfer.tasks), each
parsed and run by the tasks' one generic `main`.

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

from cebench.transfer.tasks import get_args_parser as task_parser
from cebench.transfer.tasks import get_task, list_tasks
from cebench.transfer.tasks import main as task_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cebench transfer",
        description="Transfer an encoder to classification, detection or segmentation.",
        epilog="examples:\n"
        + "\n".join(line for line in __doc__.splitlines()[1:9] if line.strip()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = list_tasks()
    sub = p.add_subparsers(dest="task", required=True, metavar="{" + ",".join(names) + "}")
    for name in names:
        task = get_task(name)
        doc = importlib.import_module(task.module).__doc__ or ""
        sub.add_parser(
            name,
            parents=[task_parser(name, add_help=False)],
            help=task.summary,
            description=task.summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=doc.split("\n\n")[1] if "\n\n" in doc else doc,
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
        return task_main(args.task, args)
