"""`cebench data get` against a local HTTP server (127.0.0.1 only) serving small archives in each
dataset's real structure: verified, resumed after a broken transfer, extracted where the paper
suite looks, and refused when the checksum or a member's path is wrong."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cebench.cli import main as cli_main
from cebench.core.errors import DatasetError
from cebench.data import get as get_mod
from cebench.data.check import check
from cebench.data.synth import generate


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with Range support; the first answer for a name in `break_once` stops half-way."""

    files: dict[str, bytes] = {}
    break_once: set[str] = set()
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        name = self.path.lstrip("/")
        self.seen.append((name, self.headers.get("Range")))
        if name not in self.files:
            self.send_error(404)
            return
        body, start = self.files[name], 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in self.break_once:
            self.break_once.discard(name)
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    _Handler.files, _Handler.break_once, _Handler.seen = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(get_mod.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    yield _Handler
    httpd.shutdown()
    httpd.server_close()


def _tar(members: dict[str, Path | bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, src in members.items():
            if isinstance(src, Path):
                tar.add(src, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(src)
                tar.addfile(info, io.BytesIO(src))
    return buf.getvalue()


def publish(server, monkeypatch, name: str, archives: dict[str, bytes]) -> None:
    """Serve `archives` and make them the published ones (their MD5s in the table)."""
    real = get_mod.datasets

    def patched():
        table = real()
        for a in table[name].archives:
            a.md5 = hashlib.md5(archives[a.filename]).hexdigest()
        return table

    monkeypatch.setattr(get_mod, "datasets", patched)
    server.files.update(archives)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("get") / "synth"
    generate(root, size=32, images=8, unlabelled=4, folder_images=12, seed=0)
    return root / "VOC"


def voc2007_archives(voc: Path) -> dict[str, bytes]:
    trainval = {"VOCdevkit/VOC2007/" + d: voc / d for d in ("Annotations", "JPEGImages")}
    for s in ("train", "val", "trainval"):
        trainval[f"VOCdevkit/VOC2007/ImageSets/Main/{s}.txt"] = voc / f"ImageSets/Main/{s}.txt"
    ids = (voc / "ImageSets/Main/val.txt").read_text().split()
    test = {"VOCdevkit/VOC2007/ImageSets/Main/test.txt": ("\n".join(ids) + "\n").encode()}
    return {"VOCtrainval_06-Nov-2007.tar": _tar(trainval), "VOCtest_06-Nov-2007.tar": _tar(test)}


def test_voc2007_resumes_verifies_and_extracts(server, monkeypatch, voc, tmp_path, capsys):
    archives = voc2007_archives(voc)
    publish(server, monkeypatch, "voc2007", archives)
    server.break_once.add("VOCtrainval_06-Nov-2007.tar")
    assert cli_main(["data", "get", "voc2007", "--root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    half = len(archives["VOCtrainval_06-Nov-2007.tar"]) // 2
    # the broken transfer was continued where it stopped, not started again
    assert server.seen[:2] == [
        ("VOCtrainval_06-Nov-2007.tar", None),
        ("VOCtrainval_06-Nov-2007.tar", f"bytes={half}-"),
    ]
    root = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    total = len(archives["VOCtrainval_06-Nov-2007.tar"])
    assert f"continuing at {half:,} of {total:,} bytes" in out
    assert f"--set data.paths.voc2007={root}" in out
    assert check(root, task="detection").problems == []
    assert not list((tmp_path / "data").glob("*.tar*"))  # archives deleted once extracted
    # a second run finds both archives done and fetches nothing
    n = len(server.seen)
    assert cli_main(["data", "get", "voc2007", "--root", str(tmp_path / "data")]) == 0
    assert len(server.seen) == n and "already extracted" in capsys.readouterr().out


def test_unfinished_part_from_an_earlier_run_is_continued(server, monkeypatch, voc, tmp_path):
    archives = voc2007_archives(voc)
    publish(server, monkeypatch, "voc2007", archives)
    data = tmp_path / "data"
    data.mkdir()
    body = archives["VOCtest_06-Nov-2007.tar"]
    (data / "VOCtest_06-Nov-2007.tar.part").write_bytes(body[:1000])
    get_mod.get("voc2007", data, say=lambda m: None)
    assert ("VOCtest_06-Nov-2007.tar", "bytes=1000-") in server.seen


def test_wrong_checksum_is_refused_and_deleted(server, monkeypatch, voc, tmp_path, capsys):
    archives = voc2007_archives(voc)
    publish(server, monkeypatch, "voc2007", archives)
    server.files["VOCtrainval_06-Nov-2007.tar"] = b"x" + archives["VOCtrainval_06-Nov-2007.tar"][1:]
    assert cli_main(["data", "get", "voc2007", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "VOCtrainval_06-Nov-2007.tar: MD5" in err and "is not the published" in err
    assert not list(tmp_path.glob("VOCtrainval*"))  # neither the archive nor a .part is kept


def test_member_outside_the_root_is_refused(server, monkeypatch, tmp_path):
    evil = _tar({"../evil.txt": b"x"}, gz=True)
    publish(server, monkeypatch, "sbd", {"benchmark.tgz": evil})
    with pytest.raises(DatasetError, match="points outside the archive"):
        get_mod.get("sbd", tmp_path / "data", say=lambda m: None)
    assert not (tmp_path / "evil.txt").exists()


def test_voc2012_segmentation_sbd_and_imagenette_layouts(
    server, monkeypatch, voc, tmp_path, capsys
):
    from scipy.io import savemat

    seg = {"VOCdevkit/VOC2012/" + d: voc / d for d in ("JPEGImages", "SegmentationClass")}
    seg["VOCdevkit/VOC2012/ImageSets/Segmentation"] = voc / "ImageSets/Segmentation"
    publish(server, monkeypatch, "voc2012", {"VOCtrainval_11-May-2012.tar": _tar(seg)})
    assert cli_main(["data", "get", "voc2012", "--root", str(tmp_path)]) == 0
    root12 = tmp_path / "VOCdevkit/VOC2012"
    assert f"--set data.paths.voc2012={root12}" in capsys.readouterr().out
    report = check(root12, task="segmentation")
    assert report.problems == [] and any("mask values" in x for x in report.lines)

    # SBD: benchmark_RELEASE/dataset/{img,cls,inst,train.txt,val.txt}, masks as MATLAB structs
    src = tmp_path / "sbd-src"
    for d in ("img", "cls", "inst"):
        (src / d).mkdir(parents=True)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 15
    for i in ("2008_000002", "2008_000003"):
        Image.new("RGB", (32, 32)).save(src / "img" / f"{i}.jpg")
        savemat(
            src / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": mask, "CategoriesPresent": [15]}}
        )
        savemat(
            src / "inst" / f"{i}.mat", {"GTinst": {"Segmentation": (mask > 0).astype(np.uint8)}}
        )
    (src / "train.txt").write_text("2008_000002\n")
    (src / "val.txt").write_text("2008_000003\n")
    publish(
        server,
        monkeypatch,
        "sbd",
        {"benchmark.tgz": _tar({"benchmark_RELEASE/dataset": src}, gz=True)},
    )
    assert cli_main(["data", "get", "sbd", "--root", str(tmp_path)]) == 0
    sbd = tmp_path / "benchmark_RELEASE/dataset"
    assert sorted(p.name for p in sbd.iterdir()) == ["cls", "img", "inst", "train.txt", "val.txt"]
    assert f"sbd is in {sbd}" in capsys.readouterr().out

    # Imagenette: imagenette2-160/{train,val}/<wnid>/*.JPEG, the paper suite's ImageNet stand-in
    src = tmp_path / "nette-src"
    for split in ("train", "val"):
        for wnid in ("n01440764", "n02102040"):
            (src / split / wnid).mkdir(parents=True)
            Image.new("RGB", (40, 32), (10, 20, 30)).save(src / split / wnid / f"{wnid}_1.JPEG")
    (src / "noisy_imagenette.csv").write_text("path,noisy_labels_0\n")
    publish(
        server,
        monkeypatch,
        "imagenette",
        {"imagenette2-160.tgz": _tar({"imagenette2-160": src}, gz=True)},
    )
    assert cli_main(["data", "get", "imagenette", "--root", str(tmp_path), "--keep-archives"]) == 0
    nette = tmp_path / "imagenette2-160"
    assert f"--set data.paths.imagenet={nette}/train" in capsys.readouterr().out
    assert (
        check(nette / "train").formats == ["imagefolder"] and check(nette / "train").problems == []
    )
    assert (tmp_path / "imagenette2-160.tgz").is_file()
    shutil.rmtree(src)


def test_what_cannot_be_downloaded_says_how(capsys, monkeypatch):
    monkeypatch.setenv(get_mod.MIRROR_ENV, "http://127.0.0.1:9")  # nothing may be fetched
    assert cli_main(["data", "get", "imagenet", "--root", "/data"]) == 1
    out = capsys.readouterr().out
    assert "image-net.org" in out and "--set data.paths.imagenet=/data/train" in out
    assert cli_main(["data", "get", "paris", "--root", "/data"]) == 1
    assert "--set data.paths.paris=/data/paris/train" in capsys.readouterr().out


def test_urls_and_checksums_are_torchvisions():
    from torchvision.datasets import voc

    table = get_mod.datasets()
    assert [a.md5 for a in table["voc2007"].archives] == [
        voc.DATASET_YEAR_DICT["2007"]["md5"],
        voc.DATASET_YEAR_DICT["2007-test"]["md5"],
    ]
    assert table["sbd"].archives[0].md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    a = table["voc2012"].archives[0]
    assert a.source("http://127.0.0.1:1/m/") == "http://127.0.0.1:1/m/VOCtrainval_11-May-2012.tar"


@pytest.mark.parametrize(
    "argv, match",
    [
        ("data get voc2007 --root {afile}", "cannot write"),
        ("data get nosuch --root {root}", "invalid choice"),
        ("data check {root} --workers -1", "--workers must be >= 0"),
        ("data check {root} --task nosuch", "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, match, monkeypatch):
    monkeypatch.setenv(get_mod.MIRROR_ENV, "http://127.0.0.1:9")  # nothing may be fetched
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = argv.format(afile=afile, root=tmp_path).split()
    with pytest.raises(SystemExit) as e:
        sys.exit(cli_main(args))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1] and "Traceback" not in "\n".join(err)
