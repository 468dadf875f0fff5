"""`cebench data`: generate the built-in synthetic dataset, validate a dataset folder, write a
resized copy of a photo folder, or download one of the paper's public datasets.

cebench data synth --out data/builtin
cebench data synth --out data/tiny --size 32 --images 48 --unlabelled 48 --folder-images 60 --seed 1
cebench data check data/builtin
cebench data check VOCdevkit/VOC2007
cebench data check coco/annotations/instances_val2017.json --images coco/val2017
cebench data prepare ~/photos --size 160 --out data/photos-160
cebench data get voc2007 --root data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  cebench data synth --out data/builtin
      default set: 64 px, 2000 VOC images (1000 train / 1000 val), 2000 unlabelled,
      1200 ImageFolder images (960 train / 240 val), seed 0
  cebench data synth --out data/tiny --size 32 --images 48 --unlabelled 48 --folder-images 60
  cebench data check data/builtin
  cebench data check VOCdevkit/VOC2007
  cebench data check coco/annotations/instances_val2017.json --images coco/val2017
  cebench data prepare ~/photos --size 160 --out data/photos-160
      resized copy (shorter side 160, same names and order) to train on instead of ~/photos
  cebench data get voc2007 --root data
      download (resumable), verify the published MD5 and extract into data/VOCdevkit/VOC2007;
      also voc2012, sbd, imagenette; `cebench data get imagenet` / `paris` say how to obtain them

`check` exits 0 when no problem is found and 1 otherwise, after listing every problem (and every
warning: suspicious but readable, e.g. a zero-area box; warnings alone exit 0).
"""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cebench data",
        description="Generate the built-in synthetic dataset (synth), validate a dataset (check) "
        "or write a resized copy of an image folder (prepare).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="{synth,check,prepare,get}")
    s = sub.add_parser(
        "synth",
        help="write the synthetic dataset (unlabelled, VOC, COCO, ImageFolder) from a seed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    s.add_argument(
        "--out", required=True, help="output folder (must be new or empty, or use --force)"
    )
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; same seed -> byte-identical files (default 0)",
    )
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    s.add_argument(
        "--images",
        type=int,
        default=2000,
        help="VOC/COCO images, half train half val (default 2000)",
    )
    s.add_argument(
        "--unlabelled", type=int, default=2000, help="unlabelled pretraining images (default 2000)"
    )
    s.add_argument(
        "--folder-images",
        type=int,
        default=1200,
        help="ImageFolder images, 80/20 train/val (default 1200)",
    )
    s.add_argument(
        "--unlabelled-style",
        choices=["scenes", "dead-leaves"],
        default="scenes",
        help="pretraining images: scenes like the VOC ones, or dead-leaves occlusion scenes "
        "(textured shapes covering the image; default scenes)",
    )
    s.add_argument(
        "--object-scale",
        type=float,
        default=1.0,
        help="multiply the object radii of the VOC and unlabelled scenes (default 1.0)",
    )
    s.add_argument(
        "--workers", type=int, default=None, help="processes (default: CPU count, at most 8)"
    )
    s.add_argument(
        "--force", action="store_true", help="replace an existing dataset written by this command"
    )
    c = sub.add_parser(
        "check",
        help="detect the format(s), print counts and image sizes, list every problem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    c.add_argument(
        "path",
        help="synth root, VOC root, COCO json (or folder with annotations/), ImageFolder or image folder",
    )
    c.add_argument("--images", default=None, help="image root for a COCO json (default: guessed)")
    c.add_argument(
        "--quiet", action="store_true", help="print only the problems and the final line"
    )
    c.add_argument(
        "--task",
        choices=["detection", "segmentation"],
        default=None,
        help="a VOC root is checked for this task only: fail only what it cannot read "
        "(default: every task whose folders are there)",
    )
    c.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that read the images (default 0: the usable CPUs / concurrent jobs, "
        "as cebench.core.threads; CEBENCH_THREADS or OMP_NUM_THREADS override)",
    )
    c.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="an image with more pixels (width x height) is a problem "
        "(default 89478485, PIL's decompression-bomb level)",
    )
    r = sub.add_parser(
        "prepare",
        help="resized copy of an image folder (shorter side --size, same names and order), "
        "so training does not decode full-size photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    r.add_argument("src", help="folder of images (searched recursively)")
    r.add_argument(
        "--size",
        type=int,
        required=True,
        help="shorter side in pixels; >= the config's data.load_size (e.g. 160)",
    )
    r.add_argument(
        "--out", required=True, help="output folder (new, or one this command wrote: updated)"
    )
    r.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    r.add_argument(
        "--force", action="store_true", help="replace an --out that holds something else"
    )
    g = sub.add_parser(
        "get",
        help="download, verify (MD5) and extract a public dataset of the paper suite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    g.add_argument(
        "name",
        choices=["voc2007", "voc2012", "sbd", "imagenette", "imagenet", "paris"],
        help="dataset (imagenet and paris cannot be downloaded: how to obtain them is printed)",
    )
    g.add_argument("--root", default="data", help="folder to extract into (default data)")
    g.add_argument(
        "--mirror",
        default=None,
        help="base URL to download from instead of the original server (the archive's file name "
        "is appended); also CEBENCH_DATA_MIRROR",
    )
    g.add_argument(
        "--keep-archives", action="store_true", help="keep the archives after extraction"
    )
    return p


def _get(args: argparse.Namespace) -> int:
    from cebench.data.get import NOT_DOWNLOADABLE, get

    if args.name in NOT_DOWNLOADABLE:
        print(NOT_DOWNLOADABLE[args.name].replace("DIR", args.root))
        return 1  # nothing was fetched
    get(args.name, args.root, mirror=args.mirror, keep_archives=args.keep_archives)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from cebench.core.errors import ConfigError
    from cebench.data.prepare import PrepareInterrupted, prepare

    try:
        info = prepare(
            args.src,
            args.out,
            args.size,
            workers=args.workers,
            force=args.force,
            say=lambda m: print(m, flush=True),
        )
    except OSError as e:  # a read-only or full disk, no permission
        where = f" ({e.filename})" if e.filename else ""
        raise ConfigError(f"--out {args.out}: cannot write: {e.strerror or e}{where}") from None
    except PrepareInterrupted as e:
        print(
            f"cebench data prepare: {e}; the finished images are kept: rerun the same command "
            "to continue",
            file=sys.stderr,
        )
        return e.exit_code
    bad = sum(1 for f in info["files"].values() if f.get("unreadable"))
    copied = sum(1 for f in info["files"].values() if f.get("copied")) - bad
    # written + kept = count; of the count, `copied` are the original bytes (already small enough)
    print(
        f"prepared {args.out}: {info['count']} images at {args.size} px "
        f"({info['written']} written now, {info['kept']} already there; of the {info['count']}, "
        f"{copied} the original file, already <= {args.size} px"
        f"{f', {bad} unreadable (copied)' if bad else ''}) in {info['seconds']:.1f} s"
    )
    return 0


def _synth(args: argparse.Namespace) -> int:
    from cebench.core.errors import ConfigError
    from cebench.core.threads import check_workers
    from cebench.data.synth import generate

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if args.workers is not None:
        check_workers(args.workers, "--workers")
    if not 0 <= args.seed < 2**63:  # numpy's generators take no negative seed
        raise ConfigError(f"--seed must be from 0 to 2**63 - 1, got {args.seed}")
    start = time.perf_counter()
    try:
        info = generate(
            out,
            seed=args.seed,
            size=args.size,
            images=args.images,
            unlabelled=args.unlabelled,
            folder_images=args.folder_images,
            unlabelled_style=args.unlabelled_style,
            object_scale=args.object_scale,
            workers=args.workers,
            force=args.force,
        )
    except OSError as e:  # a read-only or full disk, no permission: nothing half-written is left
        where = f" ({e.filename})" if e.filename else ""
        raise ConfigError(
            f"--out {out}: cannot write the dataset: {e.strerror or e}{where}"
        ) from None
    elapsed = time.perf_counter() - start
    stats = info["statistics"]["VOC"]
    print(f"wrote {args.out} in {elapsed:.1f} s (seed {info['seed']}, {info['size']} px)")
    print(f"  counts: {json.dumps(info['counts'])}")
    print(f"  classes: {', '.join(info['classes'])}")
    print(
        f"  VOC objects per image: mean {stats['objects_per_image']['mean']}, "
        f"{stats['difficult_objects']} difficult objects"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from cebench.core.errors import ConfigError
    from cebench.core.threads import resolve_threads
    from cebench.data.check import check

    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = automatic), got {args.workers}")
    workers = resolve_threads(args.workers or None).threads
    report = check(
        args.path, images=args.images, max_pixels=args.max_pixels, task=args.task, workers=workers
    )
    if not args.quiet:
        print(f"formats: {', '.join(report.formats) or 'none'}")
        print("\n".join(report.lines))
    if report.warnings:
        print(f"warnings ({len(report.warnings)}):")
        for warning in report.warnings:
            print(f"  {warning}")
    if report.problems:
        print(f"problems ({len(report.problems)}):")
        for problem in report.problems:
            print(f"  {problem}")
    print(report.summary())
    return 1 if report.problems else 0


def main(args: argparse.Namespace) -> int:
    return {"synth": _synth, "check": _check, "prepare": _prepare, "get": _get}[args.action](args)


if __name__ == "__main__":
    import sys

    sys.exit(main(get_args_parser().parse_args()))
