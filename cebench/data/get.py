"""`cebench data get NAME --root DIR`: download, verify and extract the paper's public datasets.

    cebench data get voc2007 --root data          # data/VOCdevkit/VOC2007 (trainval + test)
    cebench data get voc2012 --root data          # data/VOCdevkit/VOC2012 (segmentation)
    cebench data get sbd --root data              # data/benchmark_RELEASE/dataset (img, cls, inst)
    cebench data get imagenette --root data       # data/imagenette2-160/{train,val}
    cebench data get imagenet                      # how to obtain it (not downloadable)
    CEBENCH_DATA_MIRROR=http://127.0.0.1:8000 cebench data get voc2007 --root data   # a mirror

The URLs and MD5 checksums are torchvision's own (torchvision.datasets.VOCDetection, SBDataset,
Imagenette: the checksums their authors published), and so are the integrity check and the
extraction (torchvision.datasets.utils.check_integrity, extract_archive). The transfer itself is
ours because torchvision's `download_url` starts again from zero after a broken connection: a
VOC 2012 archive is 2 GB. Here an unfinished download is kept as ARCHIVE.part and continued
with an HTTP Range request, in the same run (a few tries) or the next one. An archive whose MD5
differs from the published one is deleted and the command fails, naming both sums.

Each archive is extracted into DIR exactly as published (VOCdevkit/VOC2007, benchmark_RELEASE/,
imagenette2-160/), which is the layout the paper suite's `data.paths` expect
(benchmarks/suites/paper.yaml); the command ends with the `--set` line(s) to pass to
`cebench bench --suite paper`. A finished archive leaves DIR/.cebench-get/ARCHIVE.done, so running
the command again does nothing; the archive is deleted once extracted (--keep-archives keeps it).

The base URL is overridable (--mirror, or CEBENCH_DATA_MIRROR): the file name is appended to it,
as on the original servers. The tests serve small archives of each dataset's real structure from
127.0.0.1 this way.
"""

from __future__ import annotations

import os
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cebench.core.errors import DatasetError

MIRROR_ENV = "CEBENCH_DATA_MIRROR"
CHUNK = 1 << 20
TRIES = 4  # connections per archive before giving up (each continues where the last stopped)


@dataclass
class Archive:
    url: str
    filename: str
    md5: str

    def source(self, mirror: str | None) -> str:
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


@dataclass
class Dataset:
    name: str
    what: str
    archives: list[Archive]
    folder: str  # relative to --root: the dataset's root once extracted
    needs: tuple[str, ...]  # paths under `folder` that must exist after extraction
    set_lines: tuple[str, ...]  # --set lines for the paper suite ({folder} = the dataset root)


def _torchvision_archives() -> dict[str, list[Archive]]:
    from torchvision.datasets import imagenette, sbd, voc

    def from_voc(key: str) -> Archive:
        d = voc.DATASET_YEAR_DICT[key]
        return Archive(d["url"], d["filename"], d["md5"])

    url, md5 = imagenette.Imagenette._ARCHIVES["160px"]
    return {
        "voc2007": [from_voc("2007"), from_voc("2007-test")],
        "voc2012": [from_voc("2012")],
        "sbd": [Archive(sbd.SBDataset.url, sbd.SBDataset.filename, sbd.SBDataset.md5)],
        "imagenette": [Archive(url, url.rsplit("/", 1)[1], md5)],
    }


def datasets() -> dict[str, Dataset]:
    a = _torchvision_archives()
    return {
        "voc2007": Dataset(
            "voc2007",
            "PASCAL VOC 2007 trainval + test (classification and detection transfer), 0.9 GB",
            a["voc2007"],
            "VOCdevkit/VOC2007",
            ("JPEGImages", "Annotations", "ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt"),
            ("data.paths.voc2007={folder}",),
        ),
        "voc2012": Dataset(
            "voc2012",
            "PASCAL VOC 2012 trainval (segmentation transfer; the random-region shapes), 2.0 GB",
            a["voc2012"],
            "VOCdevkit/VOC2012",
            ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt"),
            ("data.paths.voc2012={folder}",),
        ),
        "sbd": Dataset(
            "sbd",
            "Semantic Boundaries Dataset (Hariharan et al. 2011): 11,355 VOC 2011 images with "
            "segmentation masks (.mat), the FCN training set, 1.4 GB",
            a["sbd"],
            "benchmark_RELEASE/dataset",
            ("img", "cls", "inst", "train.txt", "val.txt"),
            (),
        ),
        "imagenette": Dataset(
            "imagenette",
            "Imagenette (fast.ai): 10 ImageNet classes, 13,394 images at 160 px, a small "
            "stand-in for ImageNet to try the paper suite, 0.1 GB",
            a["imagenette"],
            "imagenette2-160",
            ("train", "val"),
            ("data.paths.imagenet={folder}/train",),
        ),
    }


NOT_DOWNLOADABLE = {
    "imagenet": """ImageNet (ILSVRC 2012) cannot be downloaded without an account: register at
https://image-net.org/download.php, accept the terms, and download ILSVRC2012_img_train.tar
(138 GB, md5 1d675b47d978889d74fa0da5fadfb00e) and ILSVRC2012_devkit_t12.tar.gz into DIR. Then
torchvision unpacks it into one folder per class (DIR/train/n01440764/...):
  python -c "from torchvision.datasets import ImageNet; ImageNet('DIR', split='train')"
and the paper suite takes it with
  --set data.paths.imagenet=DIR/train
(`cebench data get imagenette` is a 10-class, 0.1 GB stand-in to try the suite first.)""",
    "paris": """Paris StreetView (Doersch et al., "What makes Paris look like Paris?", SIGGRAPH 2012)
is not publicly downloadable: the Context Encoders authors give the inpainting split (14,900 train
/ 100 test images) on request (see https://github.com/pathak22/context-encoder, "Paris StreetView
Dataset"). Put the training images in DIR/paris/train and the test images in DIR/paris/test, then
  --set data.paths.paris=DIR/paris/train --set data.paths.heldout=DIR/paris/test""",
}


def _say(msg: str) -> None:
    print(msg, flush=True)


def fetch(url: str, dest: Path, md5: str, say: Callable[[str], None] = _say) -> None:
    """Download `url` to `dest` and verify its MD5, continuing an unfinished DEST.part with an
    HTTP Range request (after a broken connection, or from an earlier run)."""
    from torchvision.datasets.utils import check_integrity

    if check_integrity(str(dest), md5):
        say(f"  {dest.name}: already downloaded, MD5 ok")
        return
    part = dest.with_name(dest.name + ".part")
    last_error, before = "", -1
    for attempt in range(TRIES):
        have = part.stat().st_size if part.is_file() else 0
        if attempt and have == before:  # the last try brought nothing: wait a little
            time.sleep(min(2**attempt, 10))
        before = have
        request = urllib.request.Request(url, headers={"User-Agent": "cebench"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if have and response.status != 206:  # the server ignored the Range: start over
                    have = 0
                total = response.headers.get("Content-Length")
                total = int(total) + have if total is not None else None
                size = f"{total:,} bytes" if total else "size unknown"
                say(
                    f"  {url}: continuing at {have:,} of {size}"
                    if have
                    else f"  {url}: downloading {size}"
                )
                _copy(response, part, have, total, say)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part is complete (or wrong)
                break
            raise DatasetError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:  # a refused or broken connection
            last_error = str(getattr(e, "reason", None) or e)
    else:
        have = part.stat().st_size if part.is_file() else 0
        raise DatasetError(
            f"{url}: the transfer broke {TRIES} times ({last_error}); {have:,} bytes are kept in "
            f"{part}: run the command again to continue"
        )
    from torchvision.datasets.utils import calculate_md5

    got = calculate_md5(str(part))
    if got != md5:
        part.unlink()
        raise DatasetError(
            f"{url}: MD5 {got} is not the published {md5} (the download was deleted; a mirror "
            "with another file, or a corrupted transfer)"
        )
    os.replace(part, dest)
    say(f"  {dest.name}: MD5 ok")


def _copy(response, part: Path, have: int, total: int | None, say: Callable[[str], None]) -> None:
    done, shown = have, time.monotonic()
    with open(part, "ab" if have else "wb") as f:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            f.write(chunk)
            done += len(chunk)
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                say(f"    {done:,}" + (f" / {total:,} bytes" if total else " bytes"))
    if total is not None and done < total:
        raise OSError(f"connection closed after {done:,} of {total:,} bytes")


def _escapes(rel: str) -> bool:
    """Whether a relative archive path climbs out of the folder it is extracted into."""
    if os.path.isabs(rel):
        return True
    depth = 0
    for p in Path(rel).parts:
        depth += -1 if p == ".." else 0 if p == "." else 1
        if depth < 0:
            return True
    return False


def _check_members(archive: Path) -> None:
    """Refuse an archive with a member that would land outside the folder it is extracted into
    (an absolute path, '..', a link pointing out): torchvision's tar extraction does not check."""
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if (
                _escapes(m.name)
                or (m.issym() and _escapes(str(Path(m.name).parent / m.linkname)))
                or (m.islnk() and _escapes(m.linkname))
            ):
                raise DatasetError(f"{archive}: member {m.name!r} points outside the archive")


def get(
    name: str,
    root: str | Path,
    mirror: str | None = None,
    keep_archives: bool = False,
    say: Callable[[str], None] = _say,
) -> Path:
    """Download and extract dataset `name` under `root`; returns the dataset's root folder."""
    from torchvision.datasets.utils import extract_archive

    table = datasets()
    if name not in table:
        raise DatasetError(
            f"unknown dataset {name!r}: one of {', '.join(table)} (and {', '.join(NOT_DOWNLOADABLE)}, "
            "which cannot be downloaded)"
        )
    ds, root = table[name], Path(root)
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    done_dir = root / ".cebench-get"
    try:
        done_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"--root {root}: cannot write: {e.strerror or e}") from None
    say(f"{ds.name}: {ds.what}")
    for archive in ds.archives:
        marker = done_dir / f"{archive.filename}.done"
        if marker.is_file():
            say(f"  {archive.filename}: already extracted")
            continue
        dest = root / archive.filename
        fetch(archive.source(mirror), dest, archive.md5, say)
        _check_members(dest)
        say(f"  extracting {archive.filename} into {root}")
        extract_archive(str(dest), str(root))
        marker.write_text(f"{archive.md5}\n")
        if not keep_archives:
            dest.unlink()
    folder = root / ds.folder
    missing = [n for n in ds.needs if not (folder / n).exists()]
    if missing:
        raise DatasetError(
            f"{folder}: not the expected layout after extraction (missing {', '.join(missing)})"
        )
    say(f"{ds.name} is in {folder}")
    if ds.set_lines:
        sets = " ".join(f"--set {line.format(folder=folder)}" for line in ds.set_lines)
        say(f"use it in the paper suite with:\n  cebench bench --suite paper {sets}")
    return folder


def how_to_obtain(name: str) -> str:
    return NOT_DOWNLOADABLE[name]
