"""The CUDA-graph step (`train.cuda_graph`, cebench.pretrain.graph_step) on the CPU.

Its static-buffer step (the batch and the masks' uniform draws copied into fixed tensors, the rest
run from them) is what a GPU captures; here it runs eagerly and must give the eager step's losses,
weights and optimizer states bit for bit. Off CUDA the config key falls back to the eager step and
says so once. The captured graph itself is compared with the eager step in tests/test_cuda.py.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_graph_step.py
"""

from __future__ import annotations

import pytest
import torch

from cebench.core.distributed import DistInfo
from cebench.core.errors import ConfigError
from cebench.core.io import safe_load
from cebench.core.logger import MetricLogger, read_jsonl
from cebench.pretrain.graph_step import choose_step
from cebench.pretrain.methods.context_encoder import GraphedStep
from cebench.pretrain.train import run
from cebench.pretrain.trainer import Trainer, resolve_run
from tests._train_helpers import tiny_config, write_images

STEPS = 5


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


def _trainer(cfg) -> Trainer:
    t = Trainer(resolve_run(cfg, DistInfo()), torch.device("cpu"), DistInfo())
    # what Trainer.train() sets before its loop
    t.pending, t.skipped_local, t.probe_row = [], 0, {}
    t.logger = MetricLogger(None, enabled=False)
    return t


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in t.method.models.items():
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, opt in t.method.optims.items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"{name}.opt.{i}.{k}": v for k, v in st.items()})
    return out


def _train(t: Trainer) -> list[dict[str, float]]:
    it = iter(t._loader())
    for _ in range(STEPS):
        t.train_step(it)
    return [{k: float(v) for k, v in m.items()} for _, m in t.pending]


@pytest.mark.parametrize(
    "overrides",
    [
        ["mask.kind=random-block"],
        ["mask.kind=random-region"],  # the released code's noise regions
        ["mask.kind=center", "mask.region=16", "model.predict=image"],
        ["method=autoencoder", "mask.kind=none", "loss.lambda_rec=1", "loss.lambda_adv=0"],
        ["loss.lambda_adv=0", "model.bottleneck_dropout=0.5"],  # no D; dropout's global RNG
        ["train.amp=bf16", "train.channels_last=true"],
    ],
)
def test_static_buffer_step_equals_the_eager_step(images, tmp_path, overrides):
    eager = _trainer(tiny_config(images, tmp_path / "eager", overrides))
    torch.manual_seed(123)  # dropout draws from the global generator: same start for both
    losses_eager = _train(eager)
    graphed = _trainer(tiny_config(images, tmp_path / "graphed", overrides))
    graphed.step_fn = GraphedStep(graphed.method, capture=False)
    torch.manual_seed(123)
    losses_graphed = _train(graphed)
    assert len(losses_graphed) == STEPS and "loss" in losses_graphed[0]
    assert losses_graphed == losses_eager
    a, b = _state(eager), _state(graphed)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(graphed.method.hole, eager.method.hole)
    # the static buffers were reused, not reallocated, and the step count went on in Adam
    assert graphed.step_fn.calls == STEPS
    assert all(g["capturable"] for o in graphed.method.optims.values() for g in o.param_groups)


def test_static_buffer_step_uses_the_shape_bank(images, tmp_path):
    bank = torch.zeros(2, 16, 16, dtype=torch.bool)
    bank[0, 3:13, 3:13], bank[1, :, 5:11] = True, True
    cfgs = [tiny_config(images, tmp_path / n, ["mask.kind=random-region"]) for n in ("e", "g")]
    eager, graphed = _trainer(cfgs[0]), _trainer(cfgs[1])
    for t in (eager, graphed):
        t.method.shapes = bank
    graphed.step_fn = GraphedStep(graphed.method, capture=False)
    assert _train(graphed) == _train(eager)
    assert torch.equal(graphed.method.hole, eager.method.hole)
    bank_with_empty = torch.cat([bank, torch.zeros(1, 16, 16, dtype=torch.bool)])
    graphed.method.shapes = bank_with_empty
    with pytest.raises(ConfigError, match="empty mask"):  # checked before any capture
        GraphedStep(graphed.method, capture=False)


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_cuda_graph_on_falls_back_on_the_cpu_once_and_changes_nothing(images, tmp_path, capsys):
    off = run(tiny_config(images, tmp_path / "off", ["train.steps=4"]))
    capsys.readouterr()
    on = run(tiny_config(images, tmp_path / "on", ["train.steps=4", "train.cuda_graph=on"]))
    err = capsys.readouterr().err
    assert (
        err.count("train.cuda_graph=on: no CUDA device (the run is on cpu); the eager step runs")
        == 1
    )
    assert _losses(on) == _losses(off)
    wa, wb = safe_load(off / "checkpoint.pt")["models"], safe_load(on / "checkpoint.pt")["models"]
    for part in wa:
        for k in wa[part]:
            assert torch.equal(wa[part][k], wb[part][k]), (part, k)
    # auto is quiet off CUDA
    run(tiny_config(images, tmp_path / "auto", ["train.steps=1", "train.cuda_graph=auto"]))
    assert "cuda_graph" not in capsys.readouterr().err


def test_choose_step_names_why_a_step_is_not_graphed(images, tmp_path):
    cuda = torch.device("cuda")  # nothing is allocated: only the reasons are checked
    t = _trainer(tiny_config(images, tmp_path / "a", ["train.cuda_graph=on"]))
    fn, note = choose_step(t.method, torch.device("cpu"), DistInfo())
    assert fn == t.method.step and "no CUDA device" in note
    fn, note = choose_step(t.method, cuda, DistInfo(rank=0, world_size=2, local_rank=0))
    assert fn == t.method.step and "2 processes" in note
    rot = _trainer(
        tiny_config(
            images, tmp_path / "b", ["method=rotation", "mask.kind=none", "train.cuda_graph=auto"]
        )
    )
    fn, note = choose_step(rot.method, cuda, DistInfo())
    assert fn == rot.method.step and "method rotation has no graphed step" in note
    # masked patches subclasses the context encoder but draws its own patch grid: the context
    # encoder's graphed step (its masks from mask.kind) would train on other holes
    mp = _trainer(
        tiny_config(
            images,
            tmp_path / "m",
            ["method=masked-patches", "method_kwargs={patch: 8}", "train.cuda_graph=on"],
        )
    )
    fn, note = choose_step(mp.method, cuda, DistInfo())
    assert fn == mp.method.step and "method masked-patches has no graphed step" in note
    assert mp.method.shapes is None
    off = _trainer(tiny_config(images, tmp_path / "c"))
    assert choose_step(off.method, cuda, DistInfo()) == (off.method.step, None)


def test_cuda_graph_bad_value_is_a_config_error(images, tmp_path):
    with pytest.raises(ConfigError, match="cuda_graph"):
        tiny_config(images, tmp_path / "x", ["train.cuda_graph=maybe"])


def test_resume_may_switch_cuda_graph(images, tmp_path, capsys):
    """train.cuda_graph changes how the step runs, not what it computes: a resumed run may
    change it without the "ignoring changed keys" note, and continues bit-exactly."""
    from cebench.pretrain.train import build_config, get_args_parser

    whole = run(tiny_config(images, tmp_path / "whole", ["train.steps=4", "train.save_every=2"]))
    run(tiny_config(images, tmp_path / "part", ["train.steps=2", "train.save_every=2"]))
    capsys.readouterr()
    argv = ["--out", str(tmp_path / "part"), "--resume", "--steps", "4"]
    resumed = run(build_config(get_args_parser().parse_args([*argv, "train.cuda_graph=on"])))
    err = capsys.readouterr().err
    assert "ignoring changed keys" not in err and "train.cuda_graph=on: no CUDA device" in err
    assert _losses(resumed) == _losses(whole)
