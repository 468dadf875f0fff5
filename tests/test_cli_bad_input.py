"""Every subcommand, driven with a table of bad arguments and bad files (issue 14): each must exit
with status 2, print exactly one line on stderr, never a traceback, and change no file outside
its --out. The CLI runs in-process (`cebench.cli.main`), so the whole table takes seconds.

A case is (id, argv, out): `{name}` in argv is a fixture path (see `bad_files`); `out` names the
one path the command may create or change (None: nothing at all)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _train_helpers import write_images

from cebench.cli import main as cebench


class Evil:
    pass


class CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def _unwritable(root: Path) -> str:
    """A folder path no process here can create (a read-only or kernel file system)."""
    for candidate in ("/sys/cebench-bad-input/out", "/proc/cebench-bad-input/out"):
        try:
            os.makedirs(candidate)
        except OSError:
            return candidate
        os.rmdir(candidate)
    ro = root / "ro"  # as a non-root user a read-only folder does it
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    return str(ro / "out")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    from cebench.benchmarks.tables import COLUMNS
    from cebench.data.synth import generate
    from cebench.pretrain.encoder_file import save_encoder
    from cebench.pretrain.models import build_encoder

    root = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {"root": root}
    f["imgs"] = write_images(root / "imgs", n=4, size=36)
    f["data"] = root / "synth"
    generate(f["data"], size=32, images=4, unlabelled=4, folder_images=12, workers=1)
    f["voc"] = f["data"] / "VOC"
    (f["data"] / "notes.txt").write_text("the user's own file: --force may not delete it\n")
    (root / "badimgs").mkdir()
    (root / "badimgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    f["badimgs"] = root / "badimgs"
    (root / "bombimgs").mkdir()
    from test_reliability import _png_claiming

    _png_claiming(root / "bombimgs" / "bomb.png", 100_000, 100_000)
    f["bombimgs"] = root / "bombimgs"
    f["afile"] = root / "afile.txt"
    f["afile"].write_text("not a folder\n")
    f["empty_pt"] = root / "empty.pt"
    f["empty_pt"].write_bytes(b"")
    f["garbage_pt"] = root / "garbage.pt"
    f["garbage_pt"].write_bytes(b"garbage, not a checkpoint")
    f["evil_pt"] = root / "evil.pt"
    torch.save({"payload": Evil()}, f["evil_pt"])
    enc = build_encoder("tiny", width=4, input_size=32)
    for name, change in (
        ("noname", {"name": None}),
        ("negwidth", {"kwargs": {"width": -4, "input_size": 32}}),
        ("liststate", {"state_dict": [1, 2, 3]}),
    ):
        path = root / f"enc_{name}.pt"
        save_encoder(path, enc, "tiny", {"width": 4, "input_size": 32}, {})
        ckpt = torch.load(path, weights_only=True)
        for k, v in change.items():
            ckpt[k] = v
        if ckpt["name"] is None:
            del ckpt["name"]
        torch.save(ckpt, path)
        f[f"enc_{name}"] = path
    header = ",".join(COLUMNS)
    good_row = "s,a,t,classify,score,0,1.0,h,cpu,1.0"
    for name, text in (
        ("value", f"{header}\n{good_row.replace(',1.0,h', ',abc,h')}\n"),
        ("seed", f"{header}\n{good_row.replace(',0,1.0', ',zero,1.0')}\n"),
        ("short", f"{header}\ns,a,t\n"),
        ("columns", "suite,arm\ns,a\n"),
    ):
        (root / f"res_{name}").mkdir()
        (root / f"res_{name}" / "results.csv").write_text(text)
        f[f"res_{name}"] = root / f"res_{name}"
    (root / "res_binary").mkdir()
    (root / "res_binary" / "results.csv").write_bytes(b"\xff\xfe\x00garbage\x00\xff")
    f["res_binary"] = root / "res_binary"
    f["victim_suite"] = root / "victim.yaml"
    f["victim_suite"].write_text(
        "name: ../../victim\nseeds: [0]\narms: [{name: r, method: random}]\n"
        "tasks: [{name: c, kind: classify, metric: score}]\n"
    )
    f["broken_suite"] = root / "broken.yaml"
    f["broken_suite"].write_text("name: [unclosed\n")
    f["unwritable"] = Path(_unwritable(root))
    # issue 24: outputs overlapping inputs, YAML that is not plain data, hostile names
    f["imgs_parent"] = root
    f["enc_good"] = root / "enc_good.pt"
    save_encoder(f["enc_good"], enc, "tiny", {"width": 4, "input_size": 32}, {})
    f["deep_export"] = root / "deep.pt"  # an export whose sidecar JSON nests 100000 deep
    f["deep_export"].write_bytes(b"not read: the sidecar fails first")
    (root / "deep.pt.json").write_text("[" * 100_000 + "]" * 100_000)
    f["fifo"] = root / "fifo.png"  # a FIFO named like an image: opening it would block
    os.mkfifo(f["fifo"])
    f["run_dir"] = root / "run"  # a run folder: encoder.pt and a checkpoint.pt
    f["run_dir"].mkdir()
    save_encoder(f["run_dir"] / "encoder.pt", enc, "tiny", {"width": 4, "input_size": 32}, {})
    torch.save({"step": 1}, f["run_dir"] / "checkpoint.pt")
    f["blocked"] = root / "blocked"  # export --out blocked/w.pt: a folder where w.pt.json goes
    (f["blocked"] / "w.pt.json").mkdir(parents=True)
    for name, change in (
        ("hfhub", {"name": "timm", "kwargs": {"model_name": "hf-hub:someone/model"}}),
        ("timmkw", {"name": "timm", "kwargs": {"model_kwargs": {"checkpoint_path": "/x"}}}),
    ):
        path = root / f"enc_{name}.pt"
        ckpt = torch.load(f["enc_good"], weights_only=True)
        ckpt.update(change)
        torch.save(ckpt, path)
        f[f"enc_{name}"] = path
    f["system_pt"] = root / "system.pt"
    torch.save({"payload": CallsSystem()}, f["system_pt"])
    for name, text in (
        ("intkey", "1: 2\n"),
        ("mixedkeys", "1: 2\nfoo: 3\n"),
        ("kwargs_intkey", "method_kwargs: {1: 2}\n"),
        ("deep", "method_kwargs: {x: " + "[" * 3000 + "]" * 3000 + "}\n"),
        ("deep_dict", "train: " + "{a: " * 40 + "1" + "}" * 40 + "\n"),
    ):
        f[f"yaml_{name}"] = root / f"{name}.yaml"
        f[f"yaml_{name}"].write_text(text)
    chain = root / "chain"
    chain.mkdir()
    for i in range(200):
        (chain / f"c{i}.yaml").write_text(f"_base_: c{i + 1}.yaml\n")
    (chain / "c200.yaml").write_text("train: {steps: 1}\n")
    f["yaml_chain"] = chain / "c0.yaml"
    f["data_suite"] = root / "datasuite.yaml"  # a suite reading the user's own folder
    f["data_suite"].write_text(
        f"name: ds\nseeds: [0]\ndata: {{paths: {{voc: {f['voc']}}}}}\n"
        "arms: [{name: r, method: random, encoder: tiny}]\n"
        "transfer: {data: '{data.voc}', encoder: 'random:tiny,width=4'}\n"
        "tasks: [{name: c, kind: classify, metric: score}]\n"
    )
    f["escape_suite"] = root / "escape.yaml"
    f["escape_suite"].write_text(
        "name: escape\nseeds: [0]\narms: [{name: r, method: random, encoder: tiny}]\n"
        "transfer: {cache_dir: /tmp/cebench-escaped-cache, encoder: 'random:tiny,width=4'}\n"
        "tasks: [{name: c, kind: classify, metric: score}]\n"
    )
    return {k: str(v) for k, v in f.items()}


OUT = "{root}/out"
CASES: list[tuple[str, str, str | None]] = [
    # --- cebench (top level)
    ("top-unknown", "nosuch", None),
    # --- data synth
    (
        "synth-out-file",
        "data synth --out {afile} --images 4 --unlabelled 4 --folder-images 12",
        None,
    ),
    ("synth-out-unwritable", "data synth --out {unwritable} --size 32 --images 4", None),
    ("synth-size", "data synth --out {root}/out --size 4", OUT),
    ("synth-images", "data synth --out {root}/out --images 1", OUT),
    ("synth-workers", "data synth --out {root}/out --workers 0", OUT),
    ("synth-not-ours", "data synth --out {imgs} --force --size 32", None),
    (
        "synth-force-foreign-file",
        "data synth --out {data} --force --size 32 --images 4 --unlabelled 4 --folder-images 12",
        None,
    ),
    ("synth-workers-many", "data synth --out {root}/out --workers 99999 --size 32", OUT),
    ("prepare-workers-many", "data prepare {imgs} --size 32 --workers 99999 --out {root}/out", OUT),
    ("pretrain-workers-negative", "pretrain --data {imgs} --out {root}/out data.workers=-5", OUT),
    ("synth-size-text", "data synth --out {root}/out --size big", OUT),
    ("synth-no-action", "data", None),
    # --- data check
    ("check-max-pixels", "data check {imgs} --max-pixels 0", None),
    ("check-max-pixels-text", "data check {imgs} --max-pixels many", None),
    ("check-no-path", "data check", None),
    # --- data prepare
    ("prepare-src-file", "data prepare {afile} --size 32 --out {root}/out", OUT),
    ("prepare-src-missing", "data prepare {root}/nothing --size 32 --out {root}/out", OUT),
    ("prepare-size", "data prepare {imgs} --size 2 --out {root}/out", OUT),
    ("prepare-size-text", "data prepare {imgs} --size big --out {root}/out", OUT),
    ("prepare-no-size", "data prepare {imgs} --out {root}/out", OUT),
    ("prepare-workers", "data prepare {imgs} --size 32 --workers 0 --out {root}/out", OUT),
    ("prepare-out-file", "data prepare {imgs} --size 32 --out {afile}", None),
    ("prepare-out-foreign", "data prepare {imgs} --size 32 --out {data}", None),
    ("prepare-out-inside", "data prepare {imgs} --size 32 --out {imgs}/copy", None),
    ("prepare-out-unwritable", "data prepare {imgs} --size 32 --out {unwritable}", None),
    # --- pretrain
    ("pretrain-out-file", "pretrain --data {imgs} --steps 1 --out {afile}", None),
    ("pretrain-out-under-file", "pretrain --data {imgs} --steps 1 --out {afile}/run", None),
    ("export-out-under-file", "export {enc_good} --format state-dict --out {afile}/w.pt", None),
    ("pretrain-out-unwritable", "pretrain --data {imgs} --steps 1 --out {unwritable}", None),
    ("pretrain-device-tpu", "pretrain --data {imgs} --device tpu --out {root}/out", OUT),
    (
        "pretrain-override-yaml",
        "pretrain --data {imgs} --out {root}/out model.decoder_widths=[64,",
        OUT,
    ),
    ("pretrain-override-key", "pretrain --data {imgs} --out {root}/out model.nosuch=1", OUT),
    ("pretrain-override-form", "pretrain --data {imgs} --out {root}/out steps", OUT),
    ("pretrain-steps-zero", "pretrain --data {imgs} --steps 0 --out {root}/out", OUT),
    ("pretrain-steps-text", "pretrain --data {imgs} --steps many --out {root}/out", OUT),
    ("pretrain-mask", "pretrain --data {imgs} --mask diamond --out {root}/out", OUT),
    ("pretrain-config", "pretrain --data {imgs} --config nosuch --out {root}/out", OUT),
    ("pretrain-resume-new", "pretrain --out {root}/out --resume", OUT),
    ("pretrain-no-data", "pretrain --out {root}/out", OUT),
    ("pretrain-data-missing", "pretrain --data {root}/nothing --out {root}/out", OUT),
    ("pretrain-data-broken", "pretrain --data {badimgs} --config small --out {root}/out", OUT),
    ("pretrain-data-bomb", "pretrain --data {bombimgs} --out {root}/out", OUT),
    ("pretrain-max-pixels", "pretrain --data {imgs} --out {root}/out data.max_pixels=0", OUT),
    # --- issue 24: an output that is, contains or lies inside an input
    ("pretrain-out-is-data", "pretrain --data {imgs} --steps 1 --out {imgs}", None),
    ("pretrain-out-in-data", "pretrain --data {imgs} --steps 1 --out {imgs}/run", None),
    ("pretrain-out-holds-data", "pretrain --data {imgs} --steps 1 --out {imgs_parent}", None),
    ("prepare-out-parent-force", "data prepare {imgs} --size 32 --out {imgs_parent} --force", None),
    ("prepare-out-foreign-force", "data prepare {imgs} --size 32 --out {data} --force", None),
    ("inpaint-out-is-images", "inpaint --images {imgs} --method mean-fill --out {imgs}", None),
    ("inpaint-out-in-images", "inpaint --images {imgs} --method mean-fill --out {imgs}/o", None),
    (
        "inpaint-out-holds-ckpt",
        "inpaint --images {imgs} --checkpoint {enc_good} --out {imgs_parent}",
        None,
    ),
    ("export-out-is-source", "export {enc_good} --format state-dict --out {enc_good}", None),
    (
        "export-out-run-checkpoint",
        "export {run_dir} --format state-dict --out {run_dir}/checkpoint.pt",
        None,
    ),
    ("export-sidecar-blocked", "export {enc_good} --format state-dict --out {blocked}/w.pt", None),
    (
        "classify-out-in-data",
        "transfer classify --encoder random:tiny --data {voc} --out {voc}/o",
        None,
    ),
    (
        "segment-out-is-encoder",
        "transfer segment --encoder {enc_good} --data {voc} --out {enc_good}",
        None,
    ),
    (
        "classify-cache-dir-file",
        "transfer classify --encoder random:tiny --data {voc} --preset small --protocol linear "
        "--cache-dir {afile} --out {root}/out",
        OUT,
    ),
    ("bench-out-holds-data", "bench --suite {data_suite} --out {data}", None),
    ("bench-out-in-data", "bench --suite {data_suite} --out {voc}/results", None),
    ("bench-cache-dir-escapes", "bench --suite {escape_suite} --out {root}/out", OUT),
    # --- issue 24: YAML that is not plain data, values through a single value
    (
        "pretrain-config-int-key",
        "pretrain --data {imgs} --config {yaml_intkey} --out {root}/out",
        OUT,
    ),
    (
        "pretrain-config-mixed-keys",
        "pretrain --data {imgs} --config {yaml_mixedkeys} --out {root}/out",
        OUT,
    ),
    (
        "pretrain-kwargs-int-key",
        "pretrain --data {imgs} --config {yaml_kwargs_intkey} --out {root}/out",
        OUT,
    ),
    (
        "pretrain-override-int-key",
        "pretrain --data {imgs} --out {root}/out method_kwargs={{1:2}}",
        OUT,
    ),
    (
        "pretrain-config-deep-list",
        "pretrain --data {imgs} --config {yaml_deep} --out {root}/out",
        OUT,
    ),
    (
        "pretrain-config-deep-dict",
        "pretrain --data {imgs} --config {yaml_deep_dict} --out {root}/out",
        OUT,
    ),
    (
        "pretrain-config-base-chain",
        "pretrain --data {imgs} --config {yaml_chain} --out {root}/out",
        OUT,
    ),
    ("pretrain-seed-negative", "pretrain --data {imgs} --seed -1 --out {root}/out", OUT),
    (
        "pretrain-seed-huge",
        "pretrain --data {imgs} --seed 99999999999999999999 --out {root}/out",
        OUT,
    ),
    ("synth-seed-negative", "data synth --out {root}/out --seed -1 --size 32", OUT),
    ("pretrain-override-scalar", "pretrain --data {imgs} --out {root}/out train.steps.x=1", OUT),
    ("pretrain-override-mapping", "pretrain --data {imgs} --out {root}/out method_kwargs.x=1", OUT),
    # --- issue 24: a FIFO is not an image (reading it would block forever)
    ("pretrain-data-fifo", "pretrain --data {fifo} --out {root}/out", OUT),
    ("inpaint-images-fifo", "inpaint --images {fifo} --method mean-fill --out {root}/out", OUT),
    ("prepare-src-fifo", "data prepare {fifo} --size 32 --out {root}/out", OUT),
    ("pretrain-config-fifo", "pretrain --data {imgs} --config {fifo} --out {root}/out", OUT),
    # --- issue 24: hostile checkpoints
    (
        "inpaint-ckpt-system",
        "inpaint --images {imgs} --checkpoint {system_pt} --out {root}/out",
        OUT,
    ),
    # --- inpaint
    (
        "inpaint-size-zero",
        "inpaint --images {imgs} --method mean-fill --size 0 --out {root}/out",
        OUT,
    ),
    (
        "inpaint-size-neg",
        "inpaint --images {imgs} --method mean-fill --size -8 --out {root}/out",
        OUT,
    ),
    (
        "inpaint-region",
        "inpaint --images {imgs} --method mean-fill --size 32 --region 40 --out {root}/out",
        OUT,
    ),
    (
        "inpaint-coverage",
        "inpaint --images {imgs} --method mean-fill --mask random-block --coverage 2 --out {root}/out",
        OUT,
    ),
    (
        "inpaint-batch",
        "inpaint --images {imgs} --method mean-fill --batch-size 0 --out {root}/out",
        OUT,
    ),
    ("inpaint-no-ckpt", "inpaint --images {imgs} --out {root}/out", OUT),
    ("inpaint-ckpt-empty", "inpaint --images {imgs} --checkpoint {empty_pt} --out {root}/out", OUT),
    ("inpaint-ckpt-evil", "inpaint --images {imgs} --checkpoint {evil_pt} --out {root}/out", OUT),
    (
        "inpaint-ckpt-garbage",
        "inpaint --images {imgs} --checkpoint {garbage_pt} --out {root}/out",
        OUT,
    ),
    (
        "inpaint-ckpt-encoder",
        "inpaint --images {imgs} --checkpoint {enc_negwidth} --out {root}/out",
        OUT,
    ),
    (
        "inpaint-images-missing",
        "inpaint --images {root}/nothing --method mean-fill --out {root}/out",
        OUT,
    ),
    ("inpaint-images-bomb", "inpaint --images {bombimgs} --method mean-fill --out {root}/out", OUT),
    ("inpaint-out-file", "inpaint --images {imgs} --method mean-fill --out {afile}", None),
    (
        "inpaint-out-unwritable",
        "inpaint --images {imgs} --method mean-fill --out {unwritable}",
        None,
    ),
    (
        "inpaint-device",
        "inpaint --images {imgs} --method mean-fill --device tpu --out {root}/out",
        OUT,
    ),
    ("inpaint-method", "inpaint --images {imgs} --method magic --out {root}/out", OUT),
]
for task in ("classify", "detect", "segment"):
    base = f"transfer {task} --data {{voc}} --preset small --out {{root}}/out"
    CASES += [
        (f"{task}-encoder-empty", f"{base} --encoder {{empty_pt}}", OUT),
        (f"{task}-encoder-evil", f"{base} --encoder {{evil_pt}}", OUT),
        (f"{task}-encoder-garbage", f"{base} --encoder {{garbage_pt}}", OUT),
        (f"{task}-encoder-noname", f"{base} --encoder {{enc_noname}}", OUT),
        (f"{task}-encoder-negwidth", f"{base} --encoder {{enc_negwidth}}", OUT),
        (f"{task}-encoder-liststate", f"{base} --encoder {{enc_liststate}}", OUT),
        (f"{task}-encoder-missing", f"{base} --encoder {{root}}/nothing.pt", OUT),
        (f"{task}-encoder-spec-yaml", f"{base} --encoder random:tiny,width=[4", OUT),
        (f"{task}-encoder-spec-name", f"{base} --encoder random:nosuch", OUT),
        (f"{task}-device-tpu", f"{base} --encoder random:tiny --device tpu", OUT),
        (f"{task}-set-epochs", f"{base} --encoder random:tiny --set epochs=0", OUT),
        (f"{task}-set-yaml", f"{base} --encoder random:tiny --set lr=[1", OUT),
        (f"{task}-set-key", f"{base} --encoder random:tiny --set nosuch=1", OUT),
        (f"{task}-lr-text", f"{base} --encoder random:tiny --lr fast", OUT),
        (f"{task}-seed-huge", f"{base} --encoder random:tiny --seed 99999999999999999999", OUT),
        (f"{task}-encoder-deep-sidecar", f"{base} --encoder {{deep_export}}", OUT),
        (f"{task}-workers-negative", f"{base} --encoder random:tiny --set num_workers=-5", OUT),
        (f"{task}-set-scalar", f"{base} --encoder random:tiny --set epochs.x=1", OUT),
        (f"{task}-encoder-system", f"{base} --encoder {{system_pt}}", OUT),
        (f"{task}-encoder-hf-hub", f"{base} --encoder {{enc_hfhub}}", OUT),
        (f"{task}-encoder-timm-kwargs", f"{base} --encoder {{enc_timmkw}}", OUT),
        (
            f"{task}-data-missing",
            f"transfer {task} --encoder random:tiny --data {{root}}/nothing --out {{root}}/out",
            OUT,
        ),
        (
            f"{task}-out-file",
            f"transfer {task} --encoder random:tiny --data {{voc}} --out {{afile}}",
            None,
        ),
        (
            f"{task}-out-unwritable",
            f"transfer {task} --encoder random:tiny --data {{voc}} --out {{unwritable}}",
            None,
        ),
    ]
CASES += [
    ("transfer-no-task", "transfer", None),
    # --- bench
    ("bench-suite-unknown", "bench --suite nosuch --out {root}/out", OUT),
    ("bench-suite-victim", "bench --suite {victim_suite}", None),
    ("bench-suite-yaml", "bench --suite {broken_suite} --out {root}/out", OUT),
    ("bench-set-yaml", "bench --suite mini --set seeds=[0, --out {root}/out", OUT),
    ("bench-set-key", "bench --suite mini --set nosuch=1 --out {root}/out", OUT),
    ("bench-only", "bench --suite mini --only nomatch --out {root}/out", OUT),
    ("bench-out-file", "bench --suite mini --out {afile}", None),
    ("bench-out-unwritable", "bench --suite mini --out {unwritable}", None),
    ("bench-jobs-zero", "bench --suite mini --jobs 0 --out {root}/out", OUT),
    ("bench-jobs-negative", "bench --suite mini --jobs -1 --out {root}/out", OUT),
    ("bench-set-scalar", "bench --suite mini --set name.x=1 --out {root}/out", OUT),
    # --- table
    ("table-value", "table {res_value} --out {root}/out", OUT),
    ("table-seed", "table {res_seed} --out {root}/out", OUT),
    ("table-short", "table {res_short} --out {root}/out", OUT),
    ("table-columns", "table {res_columns} --out {root}/out", OUT),
    ("table-binary", "table {res_binary} --out {root}/out", OUT),
    ("table-missing", "table {root}/nothing --out {root}/out", OUT),
    ("table-out-file", "table {res_value} --out {afile}", None),
    # --- speed
    ("speed-steps", "speed --steps 0", None),
    ("speed-warmup", "speed --warmup -1", None),
    ("speed-device", "speed --device tpu", None),
    ("speed-threads", "speed --threads -2", None),
    ("speed-batch", "speed --batch-size 0", None),
    ("speed-config", "speed --configs nosuch", None),
    ("speed-nothing", "speed --configs none", None),
    ("speed-workdir-file", "speed --configs none --photos --workdir {afile}", None),
    ("speed-workdir-foreign", "speed --configs none --photos --workdir {imgs}", None),
]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                state[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return state


@pytest.mark.parametrize("case,argv,out", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing_else(
    bad_files, tmp_path, monkeypatch, capsys, case, argv, out
):
    if "{unwritable}" in argv and os.access(bad_files["unwritable"].rsplit("/", 1)[0], os.W_OK):
        if not bad_files["unwritable"].startswith(("/sys", "/proc")):
            pytest.skip("no unwritable folder on this machine")
    if "device cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)  # default outputs (results/<suite>) would land here
    files = dict(bad_files, root=str(tmp_path))
    args = [a.format(**files) for a in argv.split()]
    allowed = Path(out.format(**files)) if out else None
    watched = (Path(bad_files["root"]), tmp_path)
    before = _snapshot(*watched)
    try:
        rc = cebench(args)
    except SystemExit as e:  # argparse
        rc = e.code
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, f"exit {rc}; stderr: {err}"
    assert "Traceback" not in err + captured.out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    after = _snapshot(*watched)
    changed = {
        p
        for p in set(before) | set(after)
        if before.get(p) != after.get(p)
        and not (allowed is not None and Path(p).is_relative_to(allowed))
    }
    assert not changed, f"changed outside --out: {sorted(changed)}"


def test_device_cuda_without_a_gpu_is_one_line(bad_files, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for argv in (
        ["pretrain", "--data", bad_files["imgs"], "--device", "cuda", "--out", str(tmp_path / "p")],
        ["inpaint", "--images", bad_files["imgs"], "--method", "mean-fill", "--device", "cuda"]
        + ["--out", str(tmp_path / "i")],
        ["transfer", "segment", "--encoder", "random:tiny", "--data", bad_files["voc"]]
        + ["--preset", "small", "--device", "cuda:1", "--out", str(tmp_path / "t")],
        ["speed", "--device", "cuda"],
    ):
        assert cebench(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no CUDA GPU is available" in err, err
