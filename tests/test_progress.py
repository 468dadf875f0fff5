"""Plain progress lines when stderr is not a terminal (issue 12): MetricLogger and Heartbeat."""

from __future__ import annotations

import io

import pytest
import torch

from cebench.core.logger import Heartbeat, MetricLogger, format_duration, progress_line
from cebench.transfer.loop import train_one_epoch


def test_metric_logger_prints_step_loss_rate_eta_without_a_terminal(tmp_path, capsys):
    # pytest's captured stderr is not a terminal; progress_every=0 prints at every update
    log = MetricLogger(tmp_path / "m.jsonl", total=4, desc="pretrain ce", progress_every=0)
    for step in (1, 2, 4):
        log.update(step, loss=0.5, img_per_s=100.0)
    log.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("pretrain ce: step 2/4 (50%) | loss 0.5 | 100 img/s | eta ")
    assert "eta 0s" in lines[2]  # finished: nothing left


def test_metric_logger_is_quiet_before_the_interval_and_when_disabled(tmp_path, capsys):
    log = MetricLogger(tmp_path / "m.jsonl", total=4, desc="x", progress_every=3600)
    log.update(1, loss=1.0)
    log.close()
    off = MetricLogger(None, total=4, desc="y", enabled=False, progress_every=0)
    off.update(1, loss=1.0)
    off.close()
    assert capsys.readouterr().err == ""


def test_progress_line_and_duration_format():
    assert format_duration(5) == "5s" and format_duration(185) == "3m05s"
    assert format_duration(3720) == "1h02m"
    line = progress_line("detect", 3, None, 2.0, "step", {"loss": 0.25, "lr": 0.1})
    assert line == "detect: step 3 | loss 0.25 | 2 step/s"  # lr left out, no total: no percent


def test_heartbeat_in_the_transfer_epoch_loop(capsys, monkeypatch):
    # train_one_epoch prints batch, loss, images/s and the epoch's eta when not on a terminal
    monkeypatch.setenv("CEBENCH_PROGRESS_EVERY", "0")
    model = torch.nn.Linear(2, 1)
    batches = [(torch.ones(4, 2), torch.zeros(4, 1))] * 3
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(m, batch, dev):
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    train_one_epoch(model, batches, loss_fn, opt, torch.device("cpu"), desc="classify")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(" | ")[0] for ln in lines] == [
        "classify: batch 1/3 (33%)",
        "classify: batch 2/3 (67%)",
        "classify: batch 3/3 (100%)",
    ]
    assert " img/s | eta " in lines[0] and lines[2].endswith("eta 0s")


def test_heartbeat_is_silent_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    beat = Heartbeat("x", total=2, every=0, stream=out)
    beat.tick(images=4, loss=1.0)
    assert out.getvalue() == ""


def test_builtin_data_with_the_paper_preset_says_preset_small(tmp_path, capsys):
    from PIL import Image

    from cebench.cli import main as cebench
    from cebench.data.synth import builtin_reason, generate
    from cebench.transfer.args import preset_note
    from cebench.transfer.tasks import config_from_args, get_args_parser

    generate(tmp_path / "b", size=32, images=4, unlabelled=0, folder_images=12, workers=1)
    assert "synth.json" in builtin_reason(tmp_path / "b" / "VOC")  # found one level up
    assert "synth.json" in builtin_reason(tmp_path / "b" / "imagefolder" / "train")
    # a copied VOC folder without synth.json: recognised by its 32 px images
    (tmp_path / "b" / "synth.json").unlink()
    assert "32x32 px" in builtin_reason(tmp_path / "b" / "VOC")
    big = tmp_path / "big" / "JPEGImages"
    big.mkdir(parents=True)
    Image.new("RGB", (300, 200)).save(big / "000001.jpg")
    assert builtin_reason(big.parent) is None and builtin_reason(tmp_path / "none") is None

    voc = str(tmp_path / "b" / "VOC")
    base = ["--encoder", "random:tiny", "--data", voc, "--out", str(tmp_path / "o")]
    notes = {}
    for preset in ("paper", "small"):
        args = get_args_parser("classify").parse_args([*base, "--preset", preset])
        config_from_args("classify", args)
        notes[preset] = preset_note(args, "small")
    assert notes["small"] is None  # the paper preset only
    assert notes["paper"].startswith(f"note: {voc} looks like the built-in synthetic data")
    assert "`--preset small`" in notes["paper"]
    # when the paper preset then fails on this data (no VOC2007 trainval/test splits), the note
    # joins the one-line error instead of standing on a line of its own
    capsys.readouterr()
    rc = cebench(["transfer", "classify", *base, "--preset", "paper"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "`--preset small`" in err[0] and "trainval" in err[0]


def test_the_api_without_a_preset_names_the_builtin_preset(tmp_path):
    """`cebench.classify(...)` without `preset` starts from the task's default ("paper"), as the
    command does; on the built-in data its error carries the note, worded for Python."""
    import cebench
    from cebench.core.errors import DatasetError
    from cebench.data.synth import generate

    generate(tmp_path / "b", size=32, images=4, unlabelled=0, folder_images=12, workers=1)
    data = str(tmp_path / "b" / "imagefolder")
    with pytest.raises(DatasetError, match='preset="small" is the preset meant for it') as e:
        cebench.classify(encoder="random:tiny", data=data, out=str(tmp_path / "o"))
    assert 'preset="paper" is sized for other data' in str(e.value) and "trainval" in str(e.value)
    # with the preset meant for it: no note, and the run goes on past the data
    m = cebench.classify(
        encoder="random:tiny",
        data=data,
        out=str(tmp_path / "s"),
        preset="small",
        protocol="linear",
        probe_epochs=1,
    )
    assert "top1" in str(m)
