"""`cebench data check`: format detection, exit codes, and every problem listed (not just the first)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cebench.cli import main as cebench
from cebench.data.check import check
from cebench.data.layout import detect_layout as detect
from cebench.data.synth import generate


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "data"
    generate(out, seed=0, size=32, images=12, unlabelled=6, folder_images=12, workers=1)
    return out


def test_clean_synth_root_passes(clean, capsys):
    assert cebench(["data", "check", str(clean)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("OK: no problems found")
    assert "formats: synth" in out and "split train: 6 images" in out and "most common 32x32" in out
    assert "== COCO:" in out and "== ImageFolder:" in out and "== plain image folder:" in out


def test_detects_each_layout(clean, tmp_path):
    assert detect(clean) == [("synth", clean)]
    assert detect(clean / "VOC") == [("voc", clean / "VOC")]
    assert detect(clean / "imagefolder") == [
        ("imagefolder", clean / "imagefolder" / "train"),
        ("imagefolder", clean / "imagefolder" / "val"),
    ]
    assert detect(clean / "imagefolder" / "train") == [
        ("imagefolder", clean / "imagefolder" / "train")
    ]
    assert detect(clean / "unlabelled") == [("images", clean / "unlabelled")]
    assert detect(clean / "coco") == [
        ("coco", clean / "coco" / "annotations" / "instances_train.json"),
        ("coco", clean / "coco" / "annotations" / "instances_val.json"),
    ]
    devkit = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(clean / "VOC", devkit)
    assert detect(tmp_path) == [("voc", devkit)]
    for part in ("VOC", "imagefolder", "unlabelled", "coco", "coco/annotations/instances_val.json"):
        report = check(clean / part)
        assert report.problems == [], part
        assert report.summary() == "OK: no problems found"


def test_broken_dataset_lists_every_problem(clean, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    voc = root / "VOC"
    jpg = voc / "JPEGImages" / "000002.jpg"
    jpg.write_bytes(jpg.read_bytes()[:60])  # truncated image
    (voc / "Annotations" / "000003.xml").write_text("<annotation><size>")  # malformed XML
    xml = voc / "Annotations" / "000004.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>x", 1))  # unknown class
    mask_path = voc / "SegmentationClass" / "000008.png"
    with Image.open(mask_path) as im:
        values, palette = np.asarray(im).copy(), im.getpalette()
    values[0, 0] = 9  # outside 0..6 and not 255
    bad = Image.fromarray(values, mode="P")
    bad.putpalette(palette)
    bad.save(mask_path)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("000007\n000099\n")  # id without files
    ann = root / "coco" / "annotations" / "instances_val.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 42
    ann.write_text(json.dumps(data))
    for p in (root / "imagefolder" / "val" / "ring").iterdir():
        p.unlink()  # empty class folder
    (root / "unlabelled" / "000001.png").write_bytes(b"not a png")

    assert cebench(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    expected = [
        "000002.jpg: cannot read image",
        "000003.xml: malformed XML",
        "000004.xml: object 0 has unknown class 'x",
        "000008.png: mask values [9] outside the class range 0..6",
        "000099.xml: annotation file not found",
        "000099.jpg: image listed in the split but not found",
        "instances_val.json: annotations[0] (id 1) has unknown category_id 42",
        "ring: class folder holds no image",
        "000001.png: cannot read image",
    ]
    problems = out[out.index("problems (") :]
    for text in expected:
        assert text in problems, text
    n = int(out.strip().splitlines()[-1].split()[0])
    assert n >= len(expected) and out.strip().endswith(f"{n} problem(s) found")


def test_missing_path_and_empty_folder(tmp_path, capsys):
    assert cebench(["data", "check", str(tmp_path / "nope")]) == 1
    assert "no such file or directory" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert cebench(["data", "check", str(tmp_path / "empty"), "--quiet"]) == 1
    assert "no images found" in capsys.readouterr().out


def test_synth_command_and_help(tmp_path, capsys):
    assert cebench(["data", "synth", "--out", str(tmp_path / "d"), "--size", "24", "--images", "4",
                    "--unlabelled", "2", "--folder-images", "12", "--workers", "1"]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out and (tmp_path / "d" / "synth.json").is_file()
    # an existing dataset is only replaced with --force; input errors print one line and exit 2
    assert (
        cebench(["data", "synth", "--out", str(tmp_path / "d"), "--size", "24", "--images", "4"])
        == 2
    )
    assert "use --force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cebench(["data", "synth", "--help"])
    assert "cebench data synth --out data/builtin" in capsys.readouterr().out
