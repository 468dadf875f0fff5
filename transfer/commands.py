"""`cebench transfer <task>`: one subcommand per registered task (cebench.transfer.tasks), each
parsed and run by the tasks' one generic `main`. The help lists the tasks and their examples (the
first block of each task module's docstring) from the registry.

    cebench transfer --help
    cebench transfer TASK --encoder runs/ce --data data/builtin/VOC --preset small --out runs/TASK

Every run writes OUT/metrics.json (metrics, resolved config, seed, wall time, device, encoder),
OUT/config.yaml, OUT/log.jsonl (training loss per epoch) and OUT/model.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cebench.transfer.tasks import examples, get_task, list_tasks
from cebench.transfer.tasks import get_args_parser as task_parser
from cebench.transfer.tasks import main as task_main


def get_args_parser() -> argparse.ArgumentParser:
    names = list_tasks()
    p = argparse.ArgumentParser(
        prog="cebench transfer",
        description=f"Transfer an encoder with one of the registered tasks: {', '.join(names)}.",
        epilog="examples:\n" + "\n".join(examples(name).rstrip() for name in names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="task", required=True, metavar="{" + ",".join(names) + "}")
    for name in names:
        task = get_task(name)
        sub.add_parser(
            name,
            parents=[task_parser(name, add_help=False)],
            help=task.summary,
            description=task.summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=examples(name),
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
