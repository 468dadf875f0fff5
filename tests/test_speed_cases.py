"""`cebench speed`'s photo-folder and competing-process cases (issue 15): what they report, on
tiny stand-ins (no timing is asserted)."""

from __future__ import annotations

import json

from PIL import Image

from cebench.benchmarks import speed, speed_photos
from cebench.data import list_images


def test_photos_case_reports_plain_draft_prepared(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speed_photos, "PHOTO_JPEG_SIZE", (320, 240))  # the photos study's module
    monkeypatch.setattr(speed_photos, "PHOTO_PNG_SIZE", (200, 128))
    argv = ["--configs", "none", "--photos", "--steps", "1", "--warmup", "0",
            "--batch-size", "4", "--json", "--workdir", str(tmp_path)]  # fmt: skip
    assert speed.main(speed.get_args_parser().parse_args(argv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["configs"] == {} and res["contention"] is None and res["matmul_peak_tflops"] is None
    r = res["photos"]
    assert (r["files"], r["jpegs"], r["pngs"], r["load_size"]) == (8, 6, 2, 72)
    for k in ("plain", "draft", "prepared", "device"):
        assert r[f"data_{k}_img_per_s"] > 0
        ratio = r[f"data_{k}_img_per_s"] / r["train_img_per_s"]
        assert abs(r[f"data_{k}_over_train"] - ratio) <= 0.005 + 1e-3 * ratio
    assert "| prepared |" in "\n".join(out) and "| device |" in "\n".join(out)
    assert r["decode_device"] == "cpu"
    # the files are kept in --workdir, and the prepared copy mirrors them at the load size
    photos = list_images(tmp_path / "photos")
    assert [p.name for p in photos] == [f"{i:02d}.{'jpg' if i < 6 else 'png'}" for i in range(8)]
    assert Image.open(photos[0]).size == (320, 240)
    copy = tmp_path / "photos-72"
    assert [p.name for p in list_images(copy)] == [p.name for p in photos]
    assert min(Image.open(copy / "00.jpg").size) == 72
    stamp = photos[0].stat().st_mtime_ns
    speed.write_photos(tmp_path / "photos")
    assert photos[0].stat().st_mtime_ns == stamp  # cached, not rewritten


def test_contention_seconds_per_step_and_table(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    a, b = speed.CONTENTION_STEPS
    rows = [{"step": a, "time": 5.0}, {"step": b, "time": 5.0 + 0.2 * (b - a)}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert abs(speed._seconds_per_step(run) - 0.2) < 1e-9
    table = speed.format_contention(
        {"config": "small", "steps": [a, b], "reps": 1,
         "auto": {"threads": 2, "alone_step_s": 0.2, "competing_step_s": 0.5, "slowdown": 2.5}}
    )  # fmt: skip
    assert "| auto | 2 | 0.200 | 0.500 | 2.50x |" in table
    argv = speed._pretrain_argv(tmp_path, run, 30, 10)
    assert argv[3:5] == ["pretrain", "--config"] and "train.log_every=10" in argv


def test_profile_step_counts_the_operators_of_a_step(capsys):
    from cebench.benchmarks import profile_step

    argv = ["--config", "small", "--batch-size", "4", "--steps", "2", "--warmup", "0"]
    assert profile_step.main([*argv, "--rows", "5"]) == 0
    out = capsys.readouterr().out
    assert "aten::convolution_backward" in out  # a training step: forward and backward
    line = out.strip().splitlines()[-1]
    assert line.startswith("small (eager): ") and "aten operators per step" in line
    assert int(line.split(": ")[1].split()[0]) > 100
    assert profile_step.main(["--steps", "0"]) == 2
    assert "error: --steps" in capsys.readouterr().err
