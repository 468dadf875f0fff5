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


# ----- issue 24: outputs never overlap inputs
def test_refuse_overlap_is_contains_inside_and_through_a_symlink(tmp_path):
    from cebench.core.lock import refuse_overlap

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    for out, how in (
        (data, "is"),
        (tmp_path, "contains"),
        (data / "run", "lies inside"),
        (tmp_path / "link" / "run", "lies inside"),  # a link to the input is the input
    ):
        with pytest.raises(ConfigError, match=rf"--out {out} {how} the input --data"):
            refuse_overlap(out, {"--data": data, "--checkpoint": None})
    refuse_overlap(tmp_path / "data-run", {"--data": data, "--checkpoint": ""})  # a sibling


def test_bench_confines_every_path_a_cell_writes():
    from cebench.benchmarks.cells import written_paths

    resolved = {
        "out": "/r/runs/x",
        "cache_dir": "/anywhere",
        "data": "/datasets/voc",  # read, not written
        "encoder": "/r/runs/a/encoder.pt",
        "train": {"out": "/r/runs/p", "steps": 3, "log_dir": "/logs"},
        "method_kwargs": {"x": 1},
    }
    assert written_paths(resolved) == [
        ("out", "/r/runs/x"),
        ("cache_dir", "/anywhere"),
        ("train.out", "/r/runs/p"),
        ("train.log_dir", "/logs"),
    ]


def test_bench_refuses_a_transfer_cache_dir_outside_results(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\nseeds: [0]\narms: [{name: r, method: random, encoder: tiny}]\n"
        f"transfer: {{cache_dir: {tmp_path / 'escaped'}, encoder: 'random:tiny,width=4'}}\n"
        "tasks: [{name: c, kind: classify, metric: score}]\n"
    )
    assert cebench(["bench", "--suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cache_dir=" in err and "would write outside the results directory" in err, err
    assert not (tmp_path / "escaped").exists()


# ----- issue 24: a name is not a path
def test_a_builtin_name_beside_a_folder_of_that_name_is_the_builtin(tmp_path, monkeypatch):
    from cebench.benchmarks.suite import SUITES_DIR
    from cebench.pretrain.config import CONFIG_DIR, config_path
    from cebench.pretrain.train import build_config, get_args_parser

    monkeypatch.chdir(tmp_path)
    for name in ("small", "mini", "small.yaml"):
        (tmp_path / name).mkdir()
    assert config_path("small") == CONFIG_DIR / "small.yaml"
    assert load_suite("mini").name == "mini" and (SUITES_DIR / "mini.yaml").is_file()
    with pytest.raises(ConfigError, match="config file is not a file: small.yaml"):
        config_path("small.yaml")  # a YAML suffix: the user wrote a path
    # the automatic choice ("small" for small images) is the built-in too
    imgs = write_images(tmp_path / "imgs", n=2, size=36)
    args = get_args_parser().parse_args(["--data", str(imgs), "--out", "o", "--steps", "1"])
    notes: list[str] = []
    cfg = build_config(args, notes)
    assert notes[0].startswith("config: small ") and cfg.train.save_every == 100  # small.yaml's
    # a file named like a config is used only when written as a path
    (tmp_path / "mine").write_text("train: {steps: 7}\n")
    with pytest.raises(ConfigError, match=r"unknown config 'mine'.*write ./mine"):
        config_path("mine")
    assert config_path("./mine") == Path("./mine")


# ----- issue 24: only regular files are images; nothing blocks
def test_a_fifo_named_like_an_image_is_never_opened(tmp_path):
    from cebench.data.images import list_images
    from cebench.pretrain.train import auto_config_name

    data = tmp_path / "data"
    write_images(data, n=2, size=36)
    os.mkfifo(data / "a.png")  # sorts first
    os.mkfifo(tmp_path / "b.png")
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked on a FIFO"))
    signal.alarm(20)
    try:
        assert [p.name for p in list_images(data)] == ["img_000.png", "img_001.png"]
        assert auto_config_name(str(data), "context-encoder", None) == "small"
        with pytest.raises(DatasetError, match="not a regular file"):
            load_rgb(data / "a.png")
        with pytest.raises(DatasetError, match="not a regular file"):
            list_images(tmp_path / "b.png")
        assert check(data).problems == []
    finally:
        signal.alarm(0)


# ----- issue 24: numbers from the environment
@pytest.mark.parametrize(
    "name,value",
    [
        ("CEBENCH_THREADS", "99999"),
        ("CEBENCH_THREADS", "²"),
        ("CEBENCH_THREADS", "0"),
        ("CEBENCH_JOBS", "0"),
        ("CEBENCH_JOBS", "-1"),
        ("CEBENCH_IMAGE_CACHE_MB", "-5"),
        ("CEBENCH_IMAGE_CACHE_MB", "nan"),
        ("CEBENCH_PROGRESS_EVERY", "soon"),
        ("CEBENCH_OMP_PASSIVE", "2"),
    ],
)
def test_bad_numbers_in_the_environment_are_refused(tmp_path, monkeypatch, capsys, name, value):
    imgs = write_images(tmp_path / "imgs", n=2, size=36)
    monkeypatch.setenv(name, value)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    argv = ["pretrain", "--data", str(imgs), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert cebench(argv + ["--config", "small", "train.batch_size=2"]) == 2
    err = capsys.readouterr().err
    assert err == f"cebench: error: {name}={value!r}: must be a" + err.split("must be a", 1)[1]
    assert err.count("\n") == 1, err


def test_threads_beyond_torch_never_reach_it():
    # CEBENCH_THREADS=99999 crashed the process (exit 139) inside torch.set_num_threads
    env = {**os.environ, "CEBENCH_THREADS": "99999"}
    code = "from cebench.core.threads import set_threads; set_threads()"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "must be a whole number from 1 to 256" in r.stderr


def test_image_cache_budget_is_exact_and_zero_is_off(monkeypatch):
    from cebench.data.images import cache_limit_bytes

    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "0.5")
    assert cache_limit_bytes() == 2**19
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "0")
    assert cache_limit_bytes() == 0


# ----- issue 24: untrusted files never reach the network or run code
class _CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def test_a_pickle_calling_os_system_is_unsafe_not_corrupt(tmp_path):
    import pickle

    from cebench.core.io import unsafe_global

    torch.save({"x": _CallsSystem()}, tmp_path / "zip.pt")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_CallsSystem(), protocol=4))
    for name in ("zip.pt", "raw.pkl"):
        assert unsafe_global(tmp_path / name) == f"{os.system.__module__}.system"
        with pytest.raises(CheckpointError, match=r"unsafe to load: .*\((posix|nt)\.system\)"):
            safe_load(tmp_path / name)
    good = _encoder_file(tmp_path / "good.pt")
    assert unsafe_global(good) is None
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        safe_load(tmp_path / "bad.pt")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"model_name": "hf-hub:someone/model"}, "unknown model_name 'hf-hub:someone/model'"),
        ({"model_name": "local-dir:/tmp/x"}, "unknown model_name"),
        ({"model_name": "no_such_model_anywhere"}, "unknown model_name"),
        ({"model_name": ["resnet18"]}, "unknown model_name"),
        ({"model_kwargs": {"pretrained_cfg_overlay": {"hf_hub_id": "x/y"}}}, "may not hold"),
        ({"model_kwargs": {"checkpoint_path": "/etc/passwd"}}, "may not hold"),
        ({"model_kwargs": {"depth": {"nested": 1}}}, "plain data"),
    ],
)
def test_timm_names_and_kwargs_from_a_file_are_data(tmp_path, monkeypatch, kwargs, match):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("went to the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = _encoder_file(
        tmp_path / "enc.pt", name="timm", kwargs={"model_name": "resnet18", **kwargs}
    )
    with pytest.raises(CheckpointError, match=match):
        load_encoder(path)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# ----- issue 24: export never leaves weights without their sidecar
def test_export_whose_sidecar_cannot_be_written_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    import cebench.pretrain.export as export

    enc = _encoder_file(tmp_path / "enc.pt")

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export, "atomic_write_text", disk_full)
    out = tmp_path / "w.pt"
    assert cebench(["export", str(enc), "--format", "state-dict", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "No space left on device" in err and "\n" == err[-1]
    assert not out.exists() and not (tmp_path / "w.pt.json").exists()
    monkeypatch.undo()
    (tmp_path / "x.pt.json").mkdir()  # a folder in the way: refused before anything is written
    assert (
        cebench(["export", str(enc), "--format", "state-dict", "--out", str(tmp_path / "x.pt")])
        == 2
    )
    assert "a folder is in the way" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_every_cebench_number_in_the_code_is_checked_in_one_place():
    import re

    from cebench.core.env import OTHER_VARIABLES, VARIABLES, check_environment

    root = Path(__file__).resolve().parents[1]
    used = set()
    for folder in ("cebench", "pretrain", "transfer", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            used |= set(re.findall(r"\"(CEBENCH_[A-Z_]+)\"", path.read_text()))
    known = set(VARIABLES) | set(OTHER_VARIABLES)  # numbers, and the two that hold text
    assert used and used <= known, used - known
    assert not set(VARIABLES) & set(OTHER_VARIABLES)
    check_environment({name: "" for name in VARIABLES})  # unset or empty: the defaults
    with pytest.raises(ConfigError, match="CEBENCH_JOBS='3.5'"):
        check_environment({"CEBENCH_JOBS": "3.5"})


def test_a_recursion_error_anywhere_is_one_line(monkeypatch, capsys):
    # the net under every command: input nested deeper than Python recurses (a JSON or pickle
    # reader we do not wrap ourselves) is exit 2 and one line, never a traceback
    import cebench.benchmarks.render as render

    def endless(args):
        return endless(args)

    monkeypatch.setattr(render, "main", endless)
    assert cebench(["table", "anything"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply to read" in err, err


def test_a_hub_name_beside_a_file_of_that_name_is_the_hub_model(tmp_path, monkeypatch):
    import cebench.pretrain.models.hub as hub
    from cebench.transfer.encoders import resolve_encoder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "resnet18").write_bytes(b"a file named like the hub model")
    looked: list[dict] = []

    def not_cached(**where):
        looked.append(where)
        raise CheckpointError("pretrained weights not found in the local cache")

    monkeypatch.setattr(hub, "find_hub_weights", not_cached)
    with pytest.raises(CheckpointError, match="local cache"):
        resolve_encoder("hub:timm/resnet18")
    assert looked and looked[0].get("hf_repo")  # the hub's own weights were asked for
