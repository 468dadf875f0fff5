#!/usr/bin/env bash
# The GPU checks, in one call on a machine with a CUDA GPU (README "Speed", benchmarks/README.md "GPU"):
#   1. install cebench (no dependencies: the machine's own torch / torchvision / timm are used),
#   2. the CUDA tests (`needs_cuda`: tests/test_cuda.py, tests/test_speed.py),
#   3. `cebench speed --device cuda` for both paper configurations, then its torch.compile A/B,
#   4. the default suite on the GPU (`make bench`'s cells with device=cuda), for as long as allowed.
# Everything is logged under $OUT (default /tmp/cebench-gpu); each stage has its own time limit, so
# one failing stage does not hide the others. Missing packages (pycocotools, submitit) can be put as
# wheels in .whl/ (installed with --no-deps first).
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh [SECONDS]     # SECONDS: the whole script's budget (500)
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh ab            # 1, then A/Bs: data workers, channels_last,
#                                                           # the photo folder (plain / draft / prepared)
#   bash benchmarks/gpu_check.sh throughput                 # 1, 2, then issue 27's figures: eager vs
#       train.cuda_graph=on + data.decode=device (img/s, % of peak, step ms, data/step, 100k-step
#       hours), the photo folder with device decoding, and the kernel profiles (about 5 minutes)
# OUT defaults to benchmarks/gpu/<UTC date> (the folder the README's GPU tables cite).
set -u
OUT=${OUT:-benchmarks/gpu/$(date -u +%Y-%m-%d)}
MODE=all
if [ "${1:-}" = ab ] || [ "${1:-}" = throughput ]; then MODE=$1; shift; fi
DEADLINE=${1:-500}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo "== $(($(date +%s) - t0))s: $*" | tee -a "$OUT/summary.txt"; }

stage install
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/cb . \
    || { stage "install failed"; exit 3; }
# the installed package, not the source folders (cebench.pretrain lives in ./pretrain there); the
# repository root last, for tests/; PYTHONSAFEPATH: no cwd on sys.path, subprocesses included
export PYTHONPATH=/tmp/cb:/tmp/site:$PWD PYTHONSAFEPATH=1 PATH=/tmp/cb/bin:$PATH
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, torchvision, timm, cebench; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cebench', cebench.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    nproc
} 2>&1 | tee -a "$OUT/summary.txt"

if [ "$MODE" = ab ]; then
    A="cebench speed --device cuda --json --steps 10 --warmup 3 --no-plain --probe-epochs 1"
    for set in "" "--set data.workers=8" "--set data.workers=15" "--set train.channels_last=true"; do
        stage "$A $set"
        timeout 90 $A $set >>"$OUT/ab.log" 2>&1
        tail -1 "$OUT/ab.log" | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['overrides'], {k: (v['ours_img_per_s'], v['data_workers'], v['data_img_per_s'], v['channels_last']) for k, v in r['configs'].items()})" | tee -a "$OUT/summary.txt"
    done
    stage "photos"
    timeout 120 cebench speed --device cuda --json --configs none --photos --steps 5 --warmup 2 \
        >"$OUT/photos.log" 2>&1
    echo "photos rc=$?" | tee -a "$OUT/summary.txt"
    stage done
    exit 0
fi

if [ "$MODE" = throughput ]; then
    # eight files at most (what one device call brings back): summary.txt, speed-*.log (3),
    # pytest.log, decode.log, photos.log, profile.log; the measurements first, the tests after
    S="cebench speed --device cuda --json --steps 20 --warmup 5 --probe-epochs 1"
    stage "$S (eager, PIL workers)"
    timeout 120 $S >"$OUT/speed-eager.log" 2>&1
    echo "speed eager rc=$?" | tee -a "$OUT/summary.txt"
    G="--set train.cuda_graph=on --set data.decode=device"
    stage "$S $G"
    timeout 150 $S $G >"$OUT/speed-graph.log" 2>&1
    echo "speed graph rc=$?" | tee -a "$OUT/summary.txt"
    stage "$S $G --set train.channels_last=true --no-plain"
    timeout 120 $S $G --set train.channels_last=true --no-plain >"$OUT/speed-graph-cl.log" 2>&1
    echo "speed graph channels_last rc=$?" | tee -a "$OUT/summary.txt"
    python3 - "$OUT"/speed-eager.log "$OUT"/speed-graph.log "$OUT"/speed-graph-cl.log <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import json, sys
for f in sys.argv[1:]:
    try:
        r = json.loads(open(f).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        print(f, "no JSON:", e)
        continue
    print(f, r["overrides"], "matmul peak", r["matmul_peak_tflops"])
    for k, v in r["configs"].items():
        print(f"{k}: step {v['cuda_graph']}, decode {v['decode']}, channels_last "
              f"{v['channels_last']}: {v['ours_img_per_s']} img/s, "
              f"{1000 * v['ours_step_s']:.2f} ms/step, {v.get('of_bf16_peak')} of bf16 peak, "
              f"ours/plain {v['ratio']}, data {v['data_img_per_s']} img/s, "
              f"data/train {v['data_over_train']}, 100k steps {v['wall_100k_h']} h")
PY
    stage "CUDA tests"
    timeout 150 python3 -m pytest -q -rP -p no:cacheprovider -m needs_cuda tests/test_cuda.py \
        tests/test_speed.py tests/test_device_data.py >"$OUT/pytest.log" 2>&1
    echo "pytest rc=$? $(tail -1 "$OUT/pytest.log")" | tee -a "$OUT/summary.txt"
    grep -h "nvJPEG vs PIL" "$OUT/pytest.log" | tee -a "$OUT/summary.txt"
    for c in paper-inpainting paper-alexnet; do
        stage "decode stages $c"
        timeout 90 python3 -m cebench.benchmarks.profile_decode --config "$c" --device cuda \
            >>"$OUT/decode.log" 2>&1
        echo "rc=$? $(tail -1 "$OUT/decode.log")" | tee -a "$OUT/summary.txt"
    done
    stage "photos (data.decode=device row)"
    timeout 150 cebench speed --device cuda --json --configs none --photos --steps 5 --warmup 2 \
        >"$OUT/photos.log" 2>&1
    echo "photos rc=$?" | tee -a "$OUT/summary.txt"
    grep '^| ' "$OUT/photos.log" | tee -a "$OUT/summary.txt"
    for c in paper-inpainting paper-alexnet; do
        for g in off on; do
            stage "profile $c train.cuda_graph=$g"
            echo "=== profile $c train.cuda_graph=$g" >>"$OUT/profile.log"
            timeout 60 python3 -m cebench.benchmarks.profile_step --config "$c" --device cuda \
                --set train.cuda_graph=$g >>"$OUT/profile.log" 2>&1
            echo "rc=$? $(tail -1 "$OUT/profile.log")" | tee -a "$OUT/summary.txt"
        done
    done
    stage done
    exit 0
fi

stage "CUDA tests"
timeout 180 python3 -m pytest -q -p no:cacheprovider -m needs_cuda tests/test_cuda.py tests/test_speed.py \
    >"$OUT/pytest.log" 2>&1
echo "pytest rc=$? $(tail -1 "$OUT/pytest.log")" | tee -a "$OUT/summary.txt"

stage "cebench speed --device cuda"
timeout 120 cebench speed --device cuda --json --steps 10 --warmup 3 >"$OUT/speed.log" 2>&1
echo "speed rc=$?" | tee -a "$OUT/summary.txt"

stage "cebench speed --device cuda --compile"
timeout 150 cebench speed --device cuda --json --steps 10 --warmup 3 --compile \
    --configs paper-inpainting paper-alexnet >"$OUT/compile.log" 2>&1
echo "compile rc=$?" | tee -a "$OUT/summary.txt"

BENCH_S=$((DEADLINE - ($(date +%s) - t0) - 45))
stage "default suite on cuda (${BENCH_S}s at most)"
timeout --signal=TERM --kill-after=30 "$BENCH_S" cebench bench --suite default --out /tmp/bench-cuda \
    --jobs 3 --set pretrain.train.device=cuda --set transfer.device=cuda --set inpaint.config.device=cuda \
    >"$OUT/bench.log" 2>&1
echo "bench rc=$? $(grep -c ' ok ' "$OUT/bench.log") cells ok" | tee -a "$OUT/summary.txt"
tar czf "$OUT/bench-cuda.tar.gz" -C /tmp bench-cuda/cells bench-cuda/results.csv bench-cuda/table.md \
    2>/dev/null
stage done
