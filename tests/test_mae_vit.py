"""`--method masked-patches` with a timm ViT encoder: MAE's path (He et al. 2022). The encoder runs
on the visible tokens only, the loss is on the dropped patches only (against naive references),
the loss goes down, and encoder.pt is the whole ViT that a transfer harness takes."""

from __future__ import annotations

import copy

import pytest
import torch

from cebench.core.checkpoints import safe_load
from cebench.core.distributed import DistInfo
from cebench.core.errors import ConfigError
from cebench.core.logger import read_jsonl
from cebench.data.synth import generate
from cebench.pretrain.config import check_consistency
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.methods import get_method
from cebench.pretrain.methods.masked_patches import patch_grid_masks
from cebench.pretrain.models import build_encoder
from cebench.pretrain.models.mae import (
    MaskedAutoencoder,
    masked_patch_loss,
    patchify,
    split_patches,
    unpatchify,
)
from cebench.pretrain.train import run
from cebench.transfer import classify
from cebench.transfer.tasks import preset_config
from tests._train_helpers import tiny_config, write_images

# a 2-block ViT of width 32 on 32 px images, 8 px patches: 16 patch tokens + the class token
VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
VIT_OVERRIDES = [
    "method=masked-patches",
    "mask.kind=none",
    "model.encoder=timm",
    "model.encoder_kwargs={model_name: vit_tiny_patch16_224, model_kwargs: "
    "{patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}}",
    "method_kwargs={patch: 8, ratio: 0.75, decoder_depth: 1, decoder_width: 16, decoder_heads: 2}",
]


def tiny_vit() -> torch.nn.Module:
    return build_encoder("timm", model_name="vit_tiny_patch16_224", input_size=32, model_kwargs=VIT)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


def test_patchify_layout_and_the_split_match_the_patch_grid():
    x = torch.rand(2, 3, 32, 32)
    p = patchify(x, 8)
    assert p.shape == (2, 16, 192) and torch.equal(unpatchify(p, 8), x)
    # patch 5 is row 1, column 1; its first 3 values are pixel (8, 8) in channels 0..2
    assert torch.equal(p[:, 5, :3], x[:, :, 8, 8])
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(3))
    keep, restore, dropped = split_patches(noise, 12)
    assert keep.shape == (4, 4) and dropped.sum(1).tolist() == [12] * 4
    assert not dropped.gather(1, keep).any()  # the kept ones are exactly the not-dropped ones
    # the decoder's unshuffle: kept tokens then mask tokens, gathered by restore, are back in place
    seq = torch.cat([keep, torch.full((4, 12), -1)], 1).gather(1, restore)
    assert torch.equal(seq, torch.where(dropped, -1, torch.arange(16)))
    # the same noise drops the same patches as the convolutional path's pixel grid
    grid = patch_grid_masks(4, 32, 8, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(grid[:, 0, ::8, ::8].reshape(4, 16), dropped)


def test_the_encoder_runs_on_the_visible_tokens_only():
    torch.manual_seed(0)
    net = MaskedAutoencoder(tiny_vit(), width=16, depth=1, heads=2).eval()
    vit = net.vit
    seen = []
    hook = vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    keep, restore, dropped = split_patches(torch.rand(2, 16), round(0.75 * 16))
    with torch.no_grad():
        latent = net.encode_visible(x, keep)
        pred = net(x, keep, restore)
    hook.remove()
    assert seen == [(2, 1 + 4, 32)] * 2  # round(16 * (1 - 0.75)) visible tokens + the class token
    assert pred.shape == (2, 16, 8 * 8 * 3)
    # naive reference: each kept patch through the patch embedding's weights, its own position
    # embedding, the class token with position 0, then the blocks
    w, b = vit.patch_embed.proj.weight.flatten(1), vit.patch_embed.proj.bias
    rows = []
    for i in range(2):
        toks = [vit.cls_token[0, 0] + vit.pos_embed[0, 0]]
        for j in keep[i].tolist():
            r, c = divmod(j, 4)
            crop = x[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].flatten()
            toks.append(w @ crop + b + vit.pos_embed[0, 1 + j])
        rows.append(torch.stack(toks))
    with torch.no_grad():
        naive = vit.norm(vit.blocks(torch.stack(rows)))
    torch.testing.assert_close(latent, naive, atol=1e-5, rtol=1e-5)
    # so the dropped patches' pixels change nothing the encoder computes
    hole = dropped.view(2, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    noisy = torch.where(hole, torch.randn_like(x), x)
    with torch.no_grad():
        assert torch.equal(net.encode_visible(noisy, keep), latent)


def naive_loss(pred, target, dropped, norm_pix=False):
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if dropped[i, j]:
                t = target[i, j]
                if norm_pix:
                    t = (t - t.mean()) / (t.var() + 1e-6) ** 0.5
                total += ((pred[i, j] - t) ** 2).mean().item()
                count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_on_the_dropped_patches_only(norm_pix):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 16, 12, generator=g), torch.randn(3, 16, 12, generator=g)
    _, _, dropped = split_patches(torch.rand(3, 16, generator=g), 12)
    loss = masked_patch_loss(pred, target, dropped, norm_pix)
    assert loss.item() == pytest.approx(naive_loss(pred, target, dropped, norm_pix), rel=1e-5)
    visible_changed = torch.where(dropped[..., None], target, target + 5)
    assert masked_patch_loss(pred, visible_changed, dropped, norm_pix).item() == loss.item()
    dropped_changed = torch.where(dropped[..., None], target * 2 + 1, target)
    assert masked_patch_loss(pred, dropped_changed, dropped, norm_pix).item() != loss.item()


def test_method_step_is_mae_on_the_vit(images, tmp_path):
    cfg = tiny_config(images, tmp_path / "r", [*VIT_OVERRIDES, "optim.lr=1e-3"])
    check_consistency(cfg)
    method = get_method("masked-patches")(cfg, torch.device("cpu"), DistInfo())
    net = method.models["net"]
    assert isinstance(net, MaskedAutoencoder) and len(net.decoder.blocks) == 1
    before = copy.deepcopy(net)
    seen = []
    net.vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    m = method.step(x, None, 0)
    assert seen == [5] and method.hole.float().mean().item() == 0.75
    with torch.no_grad():
        pred = before(x, method.keep, method.restore)
    dropped = method.hole[:, 0, ::8, ::8].reshape(4, 16)
    naive = naive_loss(pred, patchify(x, 8), dropped)
    assert m["loss"].item() == pytest.approx(naive, rel=1e-5)
    enc, name, kwargs = method.encoder()
    assert enc is net.encoder and name == "timm" and kwargs["input_size"] == 32
    assert method.meta()["encoder_sees"] == "visible patches"


def test_vit_run_resumes_bit_exact(images, tmp_path):
    """The checkpoint's config keeps its timm encoder_kwargs: not merged with the small-tiny
    preset's (its width would name another architecture and reach timm)."""
    over = [*VIT_OVERRIDES, "optim.lr=1e-3"]
    full = run(tiny_config(images, tmp_path / "full", over))
    run(tiny_config(images, tmp_path / "part", [*over, "train.steps=3"]))
    resumed = run(tiny_config(images, tmp_path / "part", [*over, "train.resume=true"]))
    rows = [read_jsonl(d / "metrics.jsonl") for d in (full, resumed)]
    assert [(r["step"], r["loss"]) for r in rows[0]] == [(r["step"], r["loss"]) for r in rows[1]]
    a, b = (safe_load(d / "checkpoint.pt")["models"]["net"] for d in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_inpaint_refuses_an_mae_vit_run_in_one_line(images, tmp_path, capsys):
    """Its decoder predicts patch tokens; before, the preset's width reached timm (a misleading
    'bad arguments' line)."""
    from cebench.cli import main as cebench

    run_dir = run(tiny_config(images, tmp_path / "r", [*VIT_OVERRIDES, "train.steps=1"]))
    capsys.readouterr()
    rc = cebench(["inpaint", "--checkpoint", str(run_dir), "--images", str(images),
                  "--out", str(tmp_path / "inp")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "is a masked-patches run with a ViT encoder (MAE)" in err[0]


def test_vit_settings_are_checked(images, tmp_path):
    bad_patch = [*VIT_OVERRIDES[:-1], "method_kwargs={patch: 4}"]
    with pytest.raises(ConfigError, match=r"patch=4 must equal the ViT's patch size \(8\)"):
        check_consistency(tiny_config(images, tmp_path, bad_patch))
    cnn = ["method=masked-patches", "mask.kind=none", "method_kwargs={decoder_depth: 2}"]
    with pytest.raises(ConfigError, match="decoder_depth: MAE's decoder settings apply to a timm"):
        check_consistency(tiny_config(images, tmp_path, cnn))
    check_consistency(tiny_config(images, tmp_path, cnn[:2]))  # the convolutional path as it was


def test_loss_goes_down_and_encoder_pt_is_the_whole_vit_for_transfer(images, tmp_path):
    cfg = tiny_config(
        images,
        tmp_path / "run",
        [*VIT_OVERRIDES, "train.steps=40", "train.sample_every=20", "train.save_every=40",
         "optim.lr=0.003"],
    )  # fmt: skip
    run_dir = run(cfg)
    loss = [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(loss) == 40 and sum(loss[-5:]) / 5 < 0.7 * sum(loss[:5]) / 5
    assert (run_dir / "samples" / "step_000020.png").is_file()
    enc, info = load_encoder(run_dir / "encoder.pt")
    assert info["meta"]["method"] == "masked-patches" and info["name"] == "timm"
    assert enc(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 4, 4)  # every patch at transfer
    data = tmp_path / "data"
    generate(data, size=32, images=16, unlabelled=0, folder_images=60, workers=1)
    res = classify.run(
        preset_config("classify", "small", 
            encoder=str(run_dir),
            data=str(data / "VOC"),
            protocol="linear",
            probe_epochs=3,
            cache_dir="none",
            out=str(tmp_path / "lin"),
            device="cpu",
            input_size=32,
        )
    )
    assert 0 <= res["metrics"]["score"] <= 100
    assert res["metrics"]["layer"] == "blocks_1"  # the ViT's last block, all 16 patch tokens
