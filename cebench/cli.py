"""The `cebench` command: one entry point, one subcommand per job.

    cebench --help
    cebench data synth --out data/builtin
    cebench pretrain --data data/builtin/unlabelled --mask random-region --out runs/ce
    cebench transfer classify --encoder runs/ce/encoder.pt --data data/builtin/VOC --out runs/cls
    cebench export runs/ce --format timm --out resnet18-ce.safetensors
    cebench bench --suite default

Each subcommand lives in its own module with `get_args_parser()` and `main(args)` (the
torchvision references' shape); the module is imported only when its subcommand runs, so
`cebench --help` is fast. Errors caused by input print one line and exit 2: a `CebenchError`
(a bad file, key or value) and a command-line error (argparse's, without its usage block).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": (
        "cebench.data.commands",
        "generate the built-in dataset (synth), validate a dataset (check), resize photos "
        "(prepare) or download the paper's public datasets (get)",
    ),
    "pretrain": (
        "cebench.pretrain.train",
        "pretrain an encoder: context encoder, autoencoder or supervised",
    ),
    "inpaint": (
        "cebench.pretrain.inpaint",
        "inpaint images with a trained context encoder or a baseline; L1/L2/PSNR",
    ),
    "export": (
        "cebench.pretrain.export",
        "export an encoder's weights for timm, torchvision or as a plain state dict",
    ),
    "transfer": ("cebench.transfer.commands", "transfer an encoder"),  # + its tasks (_help)
    "bench": (
        "cebench.benchmarks.runner",
        "run a benchmark suite (pretraining x transfer x seeds) and tabulate it",
    ),
    "table": (
        "cebench.benchmarks.render",
        "re-render tables and figures from results CSVs (Markdown, LaTeX)",
    ),
    "speed": (
        "cebench.benchmarks.speed",
        "measure pretraining, data-loading and transfer throughput",
    ),
}


def _help(name: str) -> str:
    """A subcommand's one-line help; `transfer` lists the registered tasks."""
    help_ = COMMANDS[name][1]
    if name == "transfer":
        from cebench.transfer.tasks import task_names

        help_ += ": " + " | ".join(task_names())
    return help_


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cebench",
        description="Context Encoders (Pathak et al., CVPR 2016) feature-learning benchmark suite.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n"
        + "\n".join(f"  {name:<10} {_help(name)}" for name in COMMANDS)
        + "\n\nRun `cebench SUBCOMMAND --help` for its options and examples.",
    )
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="SUBCOMMAND")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse errors as one line ("cebench pretrain: error: ... (see --help)"), exit 2; for the
    parser and every sub-parser (`data synth`, `transfer classify`, ...)."""

    def error(message: str, prog: str = parser.prog) -> None:
        print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.prog = f"{parser.prog} {name}"
                _one_line_errors(sub)


def main(argv: list[str] | None = None) -> int:
    from cebench.core.env import check_environment
    from cebench.core.errors import CebenchError
    from cebench.core.threads import passive_openmp

    try:
        check_environment()  # every CEBENCH_* number, before any work
        passive_openmp()  # before torch loads OpenMP: no spinning threads on shared cores
    except CebenchError as e:
        print(f"cebench: error: {e}", file=sys.stderr)
        return 2

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        _one_line_errors(top)
        args = top.parse_args(argv)
        if args.version:
            from cebench import __version__

            print(f"cebench {__version__}")
            return 0
        _top_parser().print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = module.get_args_parser()
    parser.prog = f"cebench {name}"
    _one_line_errors(parser)
    try:  # `cebench pretrain --out X key=value --steps 3`: overrides anywhere on the line
        args = parser.parse_intermixed_args(rest)
    except TypeError:  # sub-commands (data, transfer) cannot be intermixed
        args = parser.parse_args(rest)
    try:
        rc = module.main(args)
    except CebenchError as e:
        print(f"cebench {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cebench {name}: interrupted", file=sys.stderr)
        return 130
    except RecursionError:  # a file nested deeper than Python recurses (json, yaml, pickle)
        print(
            f"cebench {name}: error: an input file is nested too deeply to read "
            f"(Python's recursion limit, {sys.getrecursionlimit()})",
            file=sys.stderr,
        )
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
