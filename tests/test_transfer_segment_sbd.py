"""FCN-AlexNet's segmentation protocol: SBD's .mat labels, the seg11valid split, whole images
with 100 px input padding, Caffe's iter_size accumulation of an unnormalised loss."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from torch import nn

from cebench.core.errors import ConfigError, DatasetError
from cebench.core.logger import read_jsonl
from cebench.data.sbd import SBDSegmentation, read_sbd_label, seg11valid, write_sbd_label
from cebench.data.synth import generate
from cebench.data.voc import load_segmentation_mask, read_classes, read_split
from cebench.transfer import segment
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.loop import make_optimizer
from cebench.transfer.tasks import preset_config

TINY = "random:tiny,width=8,depth=5"



def _sbd_mat(path, seg):
    """A cls/*.mat as SBD's MATLAB code saves it: a 1x1 struct GTcls with Boundaries (a 20x1
    cell of sparse maps), Segmentation (uint8 HxW) and CategoriesPresent (a column)."""
    gt = np.empty(
        (1, 1), dtype=[("Boundaries", "O"), ("Segmentation", "O"), ("CategoriesPresent", "O")]
    )
    cell = np.empty((20, 1), dtype=object)
    for k in range(20):
        cell[k, 0] = scipy.sparse.csc_matrix((seg == k + 1).astype(float))
    gt[0, 0]["Boundaries"] = cell
    gt[0, 0]["Segmentation"] = seg
    gt[0, 0]["CategoriesPresent"] = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"GTcls": gt})


def test_sbd_reader_returns_the_exact_label_array_of_sbds_struct(tmp_path):
    seg = np.random.default_rng(1).integers(0, 21, (13, 17)).astype(np.uint8)
    seg[0, :] = 0
    _sbd_mat(tmp_path / "a.mat", seg)
    raw = scipy.io.loadmat(str(tmp_path / "a.mat"))["GTcls"]
    assert raw.shape == (1, 1) and set(raw.dtype.names) == {
        "Boundaries",
        "Segmentation",
        "CategoriesPresent",
    }
    got = read_sbd_label(tmp_path / "a.mat")
    assert got.dtype == np.uint8 and got.shape == (13, 17)
    np.testing.assert_array_equal(got, seg)
    # our writer (for generated data) round-trips through the same layout
    write_sbd_label(tmp_path / "b.mat", seg)
    np.testing.assert_array_equal(read_sbd_label(tmp_path / "b.mat"), seg)
    scipy.io.savemat(str(tmp_path / "bad.mat"), {"other": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match="GTcls"):
        read_sbd_label(tmp_path / "bad.mat")


def test_seg11valid_and_the_training_list_exclude_each_other(tmp_path):
    voc11_val = ["2007_000033", "2007_000042", "2008_000009", "2011_000001"]
    sbd_train = ["2008_000009", "2008_000123", "2007_000042", "2010_000001"]
    assert seg11valid(voc11_val, sbd_train) == ["2007_000033", "2011_000001"]
    assert seg11valid(voc11_val, []) == voc11_val
    # the training list drops any validation id (here one is listed in both on purpose)
    root = tmp_path / "benchmark_RELEASE" / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    from PIL import Image

    for i in ["a", "b", "c"]:
        Image.new("RGB", (5, 4)).save(root / "img" / f"{i}.jpg")
        _sbd_mat(root / "cls" / f"{i}.mat", np.full((4, 5), 3, np.uint8))
    (root / "train.txt").write_text("a\nb\nc\n")
    ds = SBDSegmentation(tmp_path / "benchmark_RELEASE", "train", exclude=["b", "zz"])
    assert ds.ids == ["a", "c"] and ds.listed == ["a", "b", "c"]
    img, mask = ds[1]
    assert img.size == (5, 4) and mask.dtype == torch.int64 and (mask == 3).all()


def test_full_size_forward_with_100px_padding_gives_the_input_size():
    enc, _ = resolve_encoder(TINY, input_size=32)
    torch.manual_seed(0)
    fcn = segment.FCN(enc, 5, 32, 0, False, fc_dims=8, fc_kernel=6, input_pad=100).eval()
    assert isinstance(fcn.fc.pad6, nn.Identity)  # fc6 runs unpadded, as FCN's
    nn.init.normal_(fcn.scores["conv5"].weight)
    for h, w in [(37, 50), (64, 41)]:
        x = torch.randn(1, 3, h, w)
        out = fcn(x)
        assert out.shape == (1, 5, h, w)
        # = scores of the padded image, upsampled to the padded size, cropped at (100, 100)
        xp = torch.nn.functional.pad(x, (100, 100, 100, 100))
        top = fcn.scores["conv5"](fcn.fc(enc.forward_features(xp)["conv5"]))
        up = torch.nn.functional.interpolate(
            top, size=xp.shape[-2:], mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(out, up[..., 100 : 100 + h, 100 : 100 + w])
    # without padding a 6x6 fc6 would not fit the grid of a 37 px image
    assert enc.forward_features(torch.zeros(1, 3, 37, 50))["conv5"].shape[-2] < 6


def test_sum_loss_and_iter_size_average_per_image_pixel_sums():
    torch.manual_seed(0)
    xs = [torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 2)]
    ms = [torch.randint(0, 3, (1, 3, 4)), torch.randint(0, 3, (1, 5, 2))]
    ms[0][0, 0, 0] = 255
    model = nn.Conv2d(2, 3, 1)
    w0 = model.weight.detach().clone()
    # hand computation: the mean over the two images of each image's summed pixel losses
    grads = []
    for x, m in zip(xs, ms, strict=True):
        model.zero_grad()
        logp = model(x).log_softmax(1)
        keep = m != 255
        loss = -logp.permute(0, 2, 3, 1)[keep].gather(1, m[keep][:, None]).sum()
        loss.backward()
        grads.append(model.weight.grad.clone())
    expected = w0 - 0.1 * (grads[0] + grads[1]) / 2
    opt = make_optimizer(model.parameters(), "sgd", 0.1, momentum=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    class _Log:
        rows: list = []

        def update(self, step, **m):
            self.rows.append((step, m))

    log = _Log()
    segment.train_updates(
        model, list(zip(xs, ms, strict=True)), opt, torch.device("cpu"), sched, 1, 2, "sum", log
    )
    torch.testing.assert_close(model.weight.detach(), expected)
    assert [s for s, _ in log.rows] == [1]


def _with_sbd(tmp_path):
    """Generated VOC data and an SBD folder built from it: SBD train = VOC train + the first two
    VOC val images (so seg11valid drops them), SBD val = the rest."""
    root = tmp_path / "data"
    generate(root, size=48, images=10, unlabelled=0, folder_images=12, workers=1)
    voc = root / "VOC"
    train, val = read_split(voc, "train", "Segmentation"), read_split(voc, "val", "Segmentation")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    n = len(read_classes(voc))
    for i in train + val:
        shutil.copy(voc / "JPEGImages" / f"{i}.jpg", sbd / "img" / f"{i}.jpg")
        mask = load_segmentation_mask(voc / "SegmentationClass" / f"{i}.png", n)
        write_sbd_label(sbd / "cls" / f"{i}.mat", mask.astype(np.uint8))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in train + val[:2]))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in val[2:]))
    return root, sbd, train, val


def test_paper_preset_trains_on_sbd_and_scores_seg11valid_at_full_size(tmp_path):
    cfg = preset_config("segment", "paper")
    assert (cfg.train_data, cfg.train_split, cfg.val_split) == ("sbd", "train", "seg11valid")
    assert (cfg.input_mode, cfg.input_pad, cfg.loss_reduction) == ("full", 100, "sum")
    assert (cfg.lr, cfg.batch_size, cfg.steps, cfg.score_bias_lr) == (1e-4, 20, 100_000, 2.0)
    with pytest.raises(ConfigError, match="sbd"):
        segment.segmentation_splits(tmp_path, cfg)
    root, sbd, train, val = _with_sbd(tmp_path)
    out = tmp_path / "out"
    run_cfg = preset_config("segment", "paper", 
        encoder=TINY,
        data=str(root),
        sbd=str(sbd.parent),
        out=str(out),
        device="cpu",
        input_size=32,
        fc_dims=8,
        batch_size=3,
        steps=3,
        calibration_images=4,
    )
    record = segment.run(run_cfg)
    m = record["metrics"]
    assert m["train_images"] == len(train) + 2  # SBD train, disjoint from seg11valid
    assert m["val_images"] == len(val) - 2  # VOC val less SBD train
    assert (m["val_split"], m["input_mode"], m["train_data"]) == ("seg11valid", "full", "sbd")
    assert 0 <= m["mIoU"] <= 100
    rows = read_jsonl(out / "log.jsonl")
    # 9 images = one pass over 7 and 2 more: a line per pass and one at the end, lr fixed
    assert [r["step"] for r in rows] == [1, 2] and {r["lr"] for r in rows} == {1e-4}
    # the score layer's bias at lr x2 without weight decay
    model = segment.FCN(resolve_encoder(TINY, input_size=32)[0], 3, 32, 0, False, fc_dims=8)
    from cebench.transfer.loop import param_groups

    groups = param_groups(
        model, 5e-4, 2.0, False, lambda n: n.startswith("scores.") and n.endswith(".bias")
    )
    opt = make_optimizer(groups, "sgd", 1e-4, 0.9, 5e-4)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups][1] == (
        2e-4,
        0.0,
        1,
    )
