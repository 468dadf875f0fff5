"""Reliability (issue 14): no path escapes its folder, untrusted or malformed checkpoints are
refused in one line, one writer per run folder (two real processes), resuming another
architecture is refused, a killed data-loader worker is one line every time, oversized images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import TINY_MODEL, write_images
from PIL import Image

from cebench.benchmarks.suite import load_suite
from cebench.cli import main as cebench
from cebench.core.errors import CheckpointError, ConfigError, DatasetError
from cebench.core.io import inside, safe_load
from cebench.core.lock import LOCK_NAME, FolderLock
from cebench.data.check import check
from cebench.data.images import load_rgb
from cebench.pretrain.encoder_file import ENCODER_FORMAT, load_encoder, save_encoder
from cebench.pretrain.models import build_encoder


# ----- paths built from config values and file names stay inside their folder
@pytest.mark.parametrize("part", ["..", "../victim", "a/../../victim", "/tmp/victim", "."])
def test_inside_refuses_traversal_forms(tmp_path, part):
    with pytest.raises(ConfigError, match="would be outside"):
        inside(tmp_path / "base", part)


def test_inside_refuses_a_symlink_pointing_out_and_accepts_plain_names(tmp_path):
    base, elsewhere = tmp_path / "base", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    (base / "cells").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="would be outside"):
        inside(base, "cells", "x.json")
    assert inside(base, "runs", "a.pretrain.s0") == (base / "runs" / "a.pretrain.s0").resolve()
    assert inside(base, "x..y.png") == (base / "x..y.png").resolve()  # '..' inside a name is fine


SUITE = """
name: {name}
seeds: [0]
pretrain: {{out: "{{work}}"}}
arms: [{{name: rand, method: random, encoder: tiny}}]
tasks: [{{name: cls, kind: classify, metric: score, config: {{encoder: "{{encoder}}"}}}}]
"""


@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim", "..", "a/b", ".hidden"])
def test_suite_name_cannot_leave_results(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "results.csv").write_text("precious\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(name=name))
    with pytest.raises(ConfigError, match="suite name"):
        load_suite(suite)
    assert cebench(["bench", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "suite name" in err
    assert (tmp_path / "victim" / "results.csv").read_text() == "precious\n"
    assert not (tmp_path / "results").exists()


def test_bench_refuses_a_cells_symlink_pointing_out(tmp_path, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "cells").symlink_to(elsewhere)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(name="s"))
    assert cebench(["bench", "--suite", str(suite), "--out", str(out)]) == 2
    assert "would be outside" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_inpaint_output_names_stay_inside_out(tmp_path, monkeypatch):
    from cebench.pretrain import inpaint

    images = write_images(tmp_path / "imgs", n=2, size=32)
    monkeypatch.setattr(inpaint, "output_names", lambda paths, root: ["../escaped.png"] * 2)
    with pytest.raises(ConfigError, match="would be outside"):
        inpaint.main(
            inpaint.get_args_parser().parse_args(
                ["--images", str(images), "--out", str(tmp_path / "o"), "--method", "mean-fill"]
                + ["--size", "32"]
            )
        )
    assert not (tmp_path / "escaped.png").exists()


# ----- checkpoints: untrusted, empty, malformed
class Evil:
    pass


def test_untrusted_checkpoint_is_refused_without_torch_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        safe_load(path)
    msg = str(e.value)
    assert "not a cebench checkpoint" in msg and "unsafe" in msg and "Evil" in msg
    assert "weights_only" not in msg and "\n" not in msg


def test_empty_and_garbage_checkpoints_have_a_reason(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        safe_load(tmp_path / "empty.pt")
    for data in (b"garbage", b"PK\x03\x04garbage"):
        (tmp_path / "bad.pt").write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            safe_load(tmp_path / "bad.pt")
        msg = str(e.value)
        assert not msg.rstrip().endswith((":", "()")) and "weights_only" not in msg
        assert "\n" not in msg and "internal miniz" not in msg


def _encoder_file(path: Path, **changes) -> Path:
    enc = build_encoder("tiny", width=4, input_size=32)
    save_encoder(path, enc, "tiny", {"width": 4, "input_size": 32}, {})
    ckpt = torch.load(path, weights_only=True)
    for k, v in changes.items():
        if v is None:
            ckpt.pop(k)
        else:
            ckpt[k] = v
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"name": None}, "'name' is missing"),
        ({"name": 3}, "'name' is missing or not a string"),
        ({"kwargs": {"width": -4, "input_size": 32}}, "cannot build encoder 'tiny'"),
        ({"kwargs": {"wdith": 4}}, "cannot build encoder 'tiny'"),
        ({"kwargs": [1, 2]}, "'kwargs' is not a mapping"),
        ({"state_dict": [1, 2]}, "'state_dict' is not a mapping"),
        ({"state_dict": {"w": 1}}, "'state_dict' is not a mapping"),
        ({"state_dict": {"w": torch.zeros(2)}}, "weights do not fit"),
    ],
)
def test_malformed_encoder_file_is_one_line(tmp_path, changes, match):
    path = _encoder_file(tmp_path / "encoder.pt", format=ENCODER_FORMAT, **changes)
    with pytest.raises(CheckpointError, match=match) as e:
        load_encoder(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


# ----- one writer per folder: two real processes
HOLDER = """
import sys, time
from cebench.core.lock import FolderLock
lock = FolderLock(sys.argv[1], "test holder").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_refused_naming_pid_and_sigkill_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    proc = _hold(folder)
    try:
        with pytest.raises(
            ConfigError, match=rf"in use by another cebench process \(pid {proc.pid}"
        ):
            FolderLock(folder).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (folder / LOCK_NAME).exists()  # the file stays; the lock went with the process
    with FolderLock(folder, "second") as lock:
        assert lock.fd is not None
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())


@pytest.mark.parametrize("command", ["pretrain", "resume", "bench", "inpaint", "transfer"])
def test_commands_refuse_a_folder_another_process_writes(tmp_path, capsys, command):
    folder = tmp_path / "out"
    data = write_images(tmp_path / "imgs", n=4, size=32)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(name="s"))
    argv = {
        "pretrain": ["pretrain", "--data", str(data), "--steps", "1", "--out", str(folder)],
        "resume": ["pretrain", "--data", str(data), "--resume", "--out", str(folder)],
        "bench": ["bench", "--suite", str(suite), "--out", str(folder)],
        "inpaint": ["inpaint", "--images", str(data), "--method", "mean-fill", "--size", "32"]
        + ["--out", str(folder)],
        "transfer": ["transfer", "classify", "--encoder", "random:tiny", "--data", str(data)]
        + ["--out", str(folder)],
    }[command]
    proc = _hold(folder)
    try:
        assert cebench(argv) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert f"in use by another cebench process (pid {proc.pid}" in err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written


# ----- resuming
def _tiny_run_args(data: Path, out: Path, *extra: str) -> list[str]:
    model = [f"model.{k}={v}" for k, v in TINY_MODEL.items() if k != "encoder_kwargs"]
    return [
        "pretrain",
        "--data",
        str(data),
        "--config",
        "small",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
        *[m.replace(" ", "") for m in model],
        "model.encoder_kwargs={width: 4}",
        "data.workers=0",
        "train.sample_every=0",
        "loss.lambda_adv=0",
    ]


def test_resume_with_another_architecture_is_refused(tmp_path, capsys):
    data = write_images(tmp_path / "imgs", n=8, size=36)
    out = tmp_path / "run"
    assert cebench(_tiny_run_args(data, out)) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    argv = _tiny_run_args(data, out, "--resume", "--steps", "4") + [
        "model.encoder_kwargs={width: 8}"
    ]
    assert cebench(argv) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err and "model.encoder_kwargs" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_of_a_new_folder_says_there_is_no_run(tmp_path, capsys):
    assert cebench(["pretrain", "--out", str(tmp_path / "new"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "there is no run at" in err and "--data is required" not in err


# ----- a data-loader worker killed mid-run: one line, every time
def test_killed_loader_worker_is_one_line_every_time(tmp_path, monkeypatch, capsys):
    from cebench.pretrain import train_data

    data = write_images(tmp_path / "imgs", n=16, size=36)
    original = train_data.TrainImages.__getitem__
    for attempt, kill_at in enumerate((3, 6, 9, 13, 17)):
        calls = {"n": 0}

        def dying_item(self, key, calls=calls, kill_at=kill_at):
            calls["n"] += 1  # counted in the (forked) worker process
            if calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, key)

        monkeypatch.setattr(train_data.TrainImages, "__getitem__", dying_item)
        out = tmp_path / f"run{attempt}"
        argv = _tiny_run_args(data, out, "--steps", "8") + ["data.workers=1"]
        assert cebench(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith("cebench pretrain: error: a data-loader worker died at step")
        )
    time.sleep(0.1)
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # a later child's SIGCHLD is quiet


# ----- oversized images
def _png_claiming(path: Path, w: int, h: int) -> Path:
    """A small PNG whose header claims w x h (its pixel data is cut short)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def test_decompression_bomb_header_is_a_dataset_error_and_skippable(tmp_path):
    from cebench.pretrain.train_data import TrainImages

    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DatasetError, match="bomb.png") as e:
        load_rgb(bomb)
    assert "\n" not in str(e.value)
    # our own words and the header's size, not PIL's "could be decompression bomb DOS attack"
    assert "100000x100000" in str(e.value) and "DOS" not in str(e.value)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    ds = TrainImages([bomb, good], size=32, skip_bad_images=True)
    img, j, skipped = ds._load(0)
    assert (j, skipped) == (1, 1) and img.size == (32, 32)


def test_data_check_reports_an_image_over_the_pixel_limit(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png_claiming(folder / "big.png", 12_000, 12_000)  # 144 Mpx, 0.4 GB as RGB
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(folder / "small.png")
    report = check(folder)
    assert any(
        "big.png: image is 12000x12000 = 144.0 Mpx (0.43 GB decoded), over the limit of 89.5 Mpx"
        in p
        for p in report.problems
    )
    assert len(report.problems) == 1
    assert check(folder, max_pixels=1000).problems[0].startswith(f"{folder / 'big.png'}")
    assert len(check(folder, max_pixels=1000).problems) == 2  # 40x30 = 1200 > 1000
    assert cebench(["data", "check", str(folder), "--max-pixels", "1199"]) == 1
    assert "OK" not in capsys.readouterr().out


def test_pretrain_max_pixels_key_applies_to_training_images(tmp_path, capsys):
    data = write_images(tmp_path / "imgs", n=8, size=36)  # 36 x 36 = 1296 px
    argv = _tiny_run_args(data, tmp_path / "run") + ["data.max_pixels=1000"]
    assert cebench(argv) == 2
    err = capsys.readouterr().err
    assert "over the limit" in err and "Traceback" not in err


def test_too_few_training_images_is_one_line_before_any_note(tmp_path, capsys):
    """The lr note is said once the run starts; a refused run prints only its error."""
    data = write_images(tmp_path / "few", n=3, size=36)
    rc = cebench(
        ["pretrain", "--data", str(data), "--config", "small", "--out", str(tmp_path / "run"),
         "--batch-size", "8", "model.input_size=32", "model.output_size=32",
         "model.encoder_kwargs={width: 4}", "model.decoder_widths=[8,8]", "data.workers=0"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "3 images, fewer than the global batch size 8" in err[0]


def test_resume_with_another_config_file_keeps_the_runs_data(tmp_path, capsys):
    data = write_images(tmp_path / "imgs", n=8, size=36)
    run = tmp_path / "run"
    common = ["model.input_size=32", "model.output_size=32", "model.encoder_kwargs={width: 4}",
              "model.decoder_widths=[8,8]", "data.workers=0", "data.load_size=36"]  # fmt: skip
    assert cebench(["pretrain", "--data", str(data), "--config", "small", "--out", str(run),
                    "--steps", "2", "--batch-size", "4", *common]) == 0  # fmt: skip
    capsys.readouterr()
    rc = cebench(["pretrain", "--resume", "--config", "small", "--out", str(run), "--steps", "3",
                  "--batch-size", "4", *common])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--data is required" not in err and "resuming" in err
