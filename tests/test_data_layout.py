"""One layout detector: data check, the transfer harnesses and pretraining agree on every path."""

from __future__ import annotations

import pytest

from cebench.core.errors import DatasetError
from cebench.data.check import check
from cebench.data.layout import detect_layout, guess_coco_val, transfer_root
from cebench.data.synth import generate
from cebench.transfer.data import find_format


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout") / "synth"
    generate(root, size=32, images=8, unlabelled=4, folder_images=12, seed=0)
    return root


def test_vocdevkit_root_is_accepted_by_check_and_harnesses(synth, tmp_path):
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    (devkit / "VOC2007").symlink_to(synth / "VOC", target_is_directory=True)
    assert detect_layout(tmp_path) == [("voc", devkit / "VOC2007")]
    assert check(tmp_path).formats == ["voc"]
    # the harnesses took only a VOC root before; now the same devkit root works there too
    assert find_format(tmp_path) == ("voc", devkit / "VOC2007")
    assert find_format(devkit) == ("voc", devkit / "VOC2007")
    (devkit / "VOC2012").symlink_to(synth / "VOC", target_is_directory=True)
    with pytest.raises(DatasetError, match="several VOC roots"):
        find_format(devkit)


def test_synth_and_imagefolder_roots(synth):
    assert detect_layout(synth) == [("synth", synth)]
    assert transfer_root(synth) == ("voc", synth / "VOC")
    assert transfer_root(synth / "imagefolder") == ("imagefolder", synth / "imagefolder")
    kinds = detect_layout(synth / "imagefolder")
    assert [k for k, _ in kinds] == ["imagefolder", "imagefolder"]
    with pytest.raises(DatasetError, match="neither a VOC root"):
        transfer_root(synth / "imagefolder" / "train")  # one split only
    with pytest.raises(DatasetError, match="neither a VOC root"):
        transfer_root(synth / "unlabelled")


def test_pretraining_auto_config_reads_the_layout(synth):
    from cebench.pretrain.train import auto_config_name

    assert auto_config_name(str(synth), "context-encoder", None) == "small"
    assert auto_config_name(str(synth / "VOC"), "supervised", None) == "small-supervised"


def test_coco_val_guess_renames_the_file_only(tmp_path):
    ann = tmp_path / "train_set" / "annotations" / "instances_train2017.json"
    assert guess_coco_val(ann) == tmp_path / "train_set" / "annotations" / "instances_val2017.json"
    assert guess_coco_val("a/train.json").name == "val.json"
