"""Image classification transfer: linear probe per layer, kNN, or full fine-tuning.

    cebench transfer classify --encoder runs/ce/encoder.pt --data data/VOCdevkit/VOC2007 --out runs/cls   # the paper's protocol
    cebench transfer classify --encoder runs/ce/encoder.pt --data data/builtin/VOC --protocol linear --preset small --out runs/lin
    cebench transfer classify --encoder random:tiny --data data/builtin/imagefolder --protocol knn --preset small --out runs/knn

    from cebench.transfer.classify import run
    from cebench.transfer.tasks import preset_config
    cfg = preset_config("classify", "small", encoder="runs/ce", data="data/builtin/VOC", out="runs/cls")  # presets/classify/small.yaml
    result = run(cfg)
    result["metrics"]["score"]     # mAP (VOC data) or top-1 (ImageFolder data), in percent

Protocols (what is trained, defaults = `ClassifyConfig`):
- "finetune" (the paper's classification column): encoder + a new head, everything trained (the
  encoder stays frozen with `frozen=True`). Defaults: a linear head on the globally average-pooled
  last stage, SGD momentum 0.9, lr 0.001, weight decay 5e-4, batch 32, 60 epochs, lr x0.1 at 2/3,
  images resized to the input size, random flips, one test view.
  The paper preset (`transfer/presets/classify/paper.yaml`) is Krähenbühl et al.'s VOC 2007 protocol (ICLR 2016, arXiv 1511.06856), which
  Pathak et al. (CVPR 2016) follow: `rescale="full"` (their data-dependent within- and
  between-layer rescaling, here of the encoder and the new fc6/fc7 together, on
  `calibration_images` training images), `head="fc"` (pool5 flattened -> fc6, fc7 of 4096
  with ReLU and dropout 0.5, fresh or the encoder's trained ones -> a fresh fc8), training images
  resized to 256/227 of the input, scaled by a random 0.5-2x, randomly cropped and flipped, 10
  random test crops drawn the same way (logits averaged), VOC 2007 11-point AP as the score,
  trainval -> test; SGD momentum 0.9, lr 0.001 halved every 1/8 of training (biases 2x),
  gradients clipped at 10, batch 16, weight decay 1e-6, 255 epochs (about 80,000 iterations):
  the schedule of their released evaluation code (philkr/voc-classification).
- "linear": the encoder frozen; per stage, features average-pooled to <= 9216 dims (see
  `cebench.transfer.features`), standardised with training statistics, and a linear classifier trained on
  the cached features with Adam (lr 1e-3, weight decay 5e-4, batch 256, 100 epochs): the
  layer-wise linear-probe protocol of Zhang et al. (CVPR 2017), one classifier per layer.
- "knn": the encoder frozen; cosine similarity on the same pooled features (L2-normalised),
  k = 20 neighbours voting with weight exp(sim / 0.07) (Wu et al., CVPR 2018, as in DINO).
`head`, `random_crop`, `test_crops` and the lr steps concern "finetune" only; `rescale` applies to
every protocol (the frozen features are then those of the rescaled encoder).
Metrics: top-1 (%) for single-label ImageFolder data; for multi-label VOC data both mAPs (%):
`mAP_area` (per-class scikit-learn average precision) and `mAP_voc07` (the VOC 2007 devkit's
11-point interpolated AP), with per-class lists; `ap` picks the one reported as `score` / `mAP`.
Images with only difficult objects of a class are left out of that class; the mean is over
classes with a positive. Low-shot: `shots` labelled images per class or a `label_fraction` of
the training set (the evaluation set is always whole).
"""

from __future__ import annotations

from typing import Any

from cebench.core.lock import prepare_out_dir

# the names the task's users import from here (its config, scores and both harnesses' pieces)
from cebench.transfer.classify_common import (  # noqa: F401
    ClassifyConfig,
    ClassifyHarness,
    classification_loss,
    score,
)
from cebench.transfer.data import classification_splits  # noqa: F401
from cebench.transfer.finetune import (  # noqa: F401
    FcLayers,
    Finetune,
    FinetuneModel,
    GlobalPool,
    build_finetune_model,
    evaluate_finetuned,
    finetune,
    lr_milestones,
    predict_logits,
)
from cebench.transfer.probes import (  # noqa: F401
    Probes,
    feature_cache_dir,
    knn_scores,
    train_linear_probe,
)
from cebench.transfer.tasks import Option, TransferTask, register_task


def run(cfg: ClassifyConfig, note: str | None = None) -> dict[str, Any]:
    """Run one classification transfer job (the fine-tuning harness, transfer/finetune.py, or the
    frozen probes', transfer/probes.py, by `protocol`); writes metrics.json, log.jsonl, model.pt
    under cfg.out."""
    if cfg.protocol == "finetune":
        return Finetune().run(cfg, note)
    cache = feature_cache_dir(cfg)
    if cache is not None:  # a file in the way, an unwritable folder, the data: one line, first
        prepare_out_dir(cache, "--cache-dir", inputs={"--data": cfg.data})
    return Probes().run(cfg, note)


TASK = register_task(
    TransferTask(
        name="classify",
        module=__name__,
        config=ClassifyConfig,
        summary="linear probe per layer, kNN or fine-tuning; top-1 or VOC mAP",
        options=(
            Option(
                "--protocol",
                "protocol",
                choices=["linear", "knn", "finetune"],
                help="default: finetune",
            ),
            Option(
                "--layers",
                "layers",
                lambda v: [s for s in v.split(",") if s] or None,
                help="linear/knn: comma-separated stages (default: all)",
            ),
            Option("--shots", "shots", type=int, help="labelled training images per class"),
            Option(
                "--label-fraction",
                "label_fraction",
                type=float,
                help="fraction of the training labels used",
            ),
            Option("--k", "knn_k", type=int, help="kNN neighbours (default 20)"),
            Option(
                "--cache-dir",
                "cache_dir",
                help="feature cache (default <out>/../feature-cache; 'none' disables)",
            ),
        ),
        settings=(
            "encoder",
            "protocol",
            "data",
            ("train_split", "train"),
            ("val_split", "test"),
            ("input_size", "size"),
            "frozen",
            "head",
            "fc_dims",
            "fc_dropout",
            "random_crop",
            "min_scale",
            "max_scale",
            "test_crops",
            "test_crop_mode",
            "ap",
            "rescale",
            "keep_trained_fc",
            ("optimizer", "optim"),
            "lr",
            "bias_lr_mult",
            "clip_grad_norm",
            ("bce_reduction", "bce"),
            "epochs",
            ("batch_size", "batch"),
        ),
        # `score` is mAP (VOC data) or top-1 (ImageFolder); a probe's layers give either
        metrics=("score", "mAP", "top1"),
        report=lambda m, cfg: [
            f"classify/{cfg.protocol}: score {m['score']:.2f} "
            f"({'mAP' if m['format'] == 'voc' else 'top-1'}) -> {cfg.out}/metrics.json"
        ],
    )
)
