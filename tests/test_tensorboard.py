"""TensorBoard event files from the one metric logger, read back with TensorBoard's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cebench.core.logger import MetricLogger, read_jsonl
from cebench.transfer.tasks import preset_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run_dir):
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


def test_logger_writes_scalars_images_and_text(tmp_path):
    log = MetricLogger(tmp_path / "metrics.jsonl", total=3, tensorboard=True)
    log.update(1, loss=0.5, lr=0.1, img_per_s=200.0)
    log.update(2, loss=0.25, lr=0.05, img_per_s=220.0, skipped=True)
    log.update(10, layer="conv3", loss=0.4)  # a string names the group of the tag
    grid = np.zeros((6, 10, 3), np.uint8)
    grid[:, 5:, 0] = 255
    log.image("samples", grid, 2)
    log.scalars(3, prefix="eval", top1=81.5)
    log.text("config", "train:\n  steps: 3\n")
    log.close()

    acc = _events(tmp_path)
    tags = acc.Tags()
    assert _scalars(acc, "loss") == [(1, 0.5), (2, 0.25)]
    assert _scalars(acc, "lr") == [(1, 0.1), (2, 0.05)]
    assert _scalars(acc, "img_per_s") == [(1, 200.0), (2, 220.0)]
    assert _scalars(acc, "conv3/loss") == [(10, 0.4)]
    assert _scalars(acc, "eval/top1") == [(3, 81.5)]
    assert "skipped" not in tags["scalars"] and "layer" not in tags["scalars"]  # not numbers
    (img,) = acc.Images("samples")
    assert (img.step, img.width, img.height) == (2, 10, 6)
    (text,) = acc.Tensors("config/text_summary")
    assert b"steps: 3" in text.tensor_proto.string_val[0]
    # and metrics.jsonl is as before
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 10]


def _two_sessions(run_dir, first: int, start: int, second: int) -> list[tuple[int, float]]:
    """A session logging loss = step for steps 1..first, then one from `start` logging
    loss = 10 * step up to `second`: the loss curve TensorBoard reads back."""
    log = MetricLogger(run_dir / "m.jsonl", tensorboard=True)
    for s in range(1, first + 1):
        log.update(s, loss=float(s))
    log.close()
    log = MetricLogger(run_dir / "m.jsonl", start=start, tensorboard=True)
    for s in range(start + 1, second + 1):
        log.update(s, loss=10.0 * s)
    log.close()
    return _scalars(_events(run_dir), "loss")


def test_logger_resumed_purges_the_steps_after_its_start(tmp_path):
    # a resumed run continues from its step-2 checkpoint: steps 3 and 4 are written again
    assert _two_sessions(tmp_path, 4, 2, 4) == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_logger_without_tensorboard_writes_no_events(tmp_path):
    log = MetricLogger(tmp_path / "m.jsonl")
    log.update(1, loss=1.0)
    log.close()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_pretrain_run_writes_events(tmp_path):
    from _train_helpers import tiny_config, write_images

    from cebench.pretrain.trainer import run

    data = write_images(tmp_path / "imgs", n=8)
    run_dir = run(tiny_config(data, tmp_path / "run", ["train.steps=4", "train.sample_every=2"]))
    acc = _events(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    loss = next(k for k in rows[0] if k.startswith("loss"))
    assert _scalars(acc, loss) == [(r["step"], round(r[loss], 6)) for r in rows]
    assert [s for s, _ in _scalars(acc, "lr")] == [1, 2, 3, 4]
    assert "img_per_s" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Images("samples")] == [2, 4]
    (text,) = acc.Tensors("config/text_summary")
    assert b"tensorboard: true" in text.tensor_proto.string_val[0]

    off = run(tiny_config(data, tmp_path / "off", ["train.steps=2", "train.tensorboard=false"]))
    assert (off / "metrics.jsonl").is_file() and not list(off.glob("events.out.tfevents.*"))


def test_transfer_run_writes_events(tmp_path):
    from cebench.data.synth import generate
    from cebench.transfer import classify

    torch.set_num_threads(1)
    generate(tmp_path / "data", size=32, images=8, unlabelled=0, folder_images=12, workers=1)
    out = tmp_path / "ft"
    rec = classify.run(
        preset_config(
            "classify",
            "small",
            encoder="random:tiny,width=8",
            data=str(tmp_path / "data" / "VOC"),
            protocol="finetune",
            epochs=2,
            out=str(out),
            device="cpu",
            input_size=32,
        )
    )
    acc = _events(out)
    rows = read_jsonl(out / "log.jsonl")
    assert _scalars(acc, "loss") == [(r["step"], round(r["loss"], 6)) for r in rows]
    assert _scalars(acc, "eval/mAP") == [(2, round(rec["metrics"]["mAP"], 6))]
    (text,) = acc.Tensors("config/text_summary")
    assert b"protocol: finetune" in text.tensor_proto.string_val[0]


def test_missing_tensorboard_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    from cebench.core.errors import ConfigError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match="pip install tensorboard, or turn it off"):
        MetricLogger(tmp_path / "m.jsonl", tensorboard=True)


def test_logger_from_step_0_drops_an_earlier_attempts_events(tmp_path):
    """An attempt killed before its first checkpoint left steps 1-3; the run starts again at 0:
    TensorBoard shows the new curve only, as metrics.jsonl (truncated by the Trainer) does."""
    assert _two_sessions(tmp_path, 3, 0, 2) == [(1, 10.0), (2, 20.0)]
