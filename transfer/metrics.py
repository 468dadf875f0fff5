"""Transfer metrics: top-1, VOC classification mAP, COCO detection AP, segmentation mIoU.

    from cebench.transfer.metrics import top1, voc_mean_ap, voc07_mean_ap, ConfusionMatrix, DetectionEvaluator
    voc_mean_ap(scores, targets)        # targets in {1, 0, -1}; -1 = ignored (difficult only); area AP
    voc07_mean_ap(scores, targets)      # the same ranking scored with VOC2007's 11-point AP
    voc07_ap(recall, precision)         # 11-point interpolated AP of any precision-recall curve
    cm = ConfusionMatrix(21); cm.update(gt, pred); cm.reduce_from_all_processes(); cm.compute()
    ev = VOCDetectionEvaluator(gt_by_image); ev.update(preds); ev.compute()  # VOC07 detection mAP@0.5

Accumulators follow torchvision's references (`ConfusionMatrix`, `CocoEvaluator`: update, sync
across processes, compute); AP comes from scikit-learn and pycocotools, except the VOC2007
detection AP, which follows the devkit's matching rule (`VOCDetectionEvaluator`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score


def top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max score is the true class (single-label data), in percent."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (scores.argmax(1) == labels).float().mean().item()


def voc_mean_ap(
    scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
) -> tuple[float, list[float]]:
    """VOC classification mAP in percent: mean over classes of the per-class average precision.

    `targets[i, c]` is 1 (class c present), 0 (absent) or -1 (present only as difficult objects);
    like the VOC devkit, -1 examples are left out of class c's ranking. Per-class AP is
    scikit-learn's `average_precision_score` (the area under the precision-recall step curve, not
    the VOC2007 11-point interpolation). A class with no positive example gets AP nan and is left
    out of the mean.
    """
    return _mean_class_ap(scores, targets, lambda y, s: float(average_precision_score(y, s)))


def _mean_class_ap(scores, targets, class_ap) -> tuple[float, list[float]]:
    """Per class c: `class_ap(positive, score)` (in [0, 1]) over the examples whose target is not
    -1, in percent (nan without positives); the mean over the classes that have one."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    aps: list[float] = []
    for c in range(t.shape[1]):
        keep = t[:, c] >= 0
        y = t[keep, c] > 0
        aps.append(class_ap(y, s[keep, c]) * 100.0 if y.any() else float("nan"))
    valid = [a for a in aps if not math.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """The VOC2007 devkit's 11-point interpolated AP (in [0, 1]) of a precision-recall curve.

    AP = mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t (0 where the
    curve never reaches t): `VOCevalcls.m` / `VOCevaldet.m` of VOCdevkit 2007, and `voc_ap(...,
    use_07_metric=True)` of the Fast R-CNN code the paper's detection numbers come from."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = precision[recall >= t]
        ap += (float(p.max()) if p.size else 0.0) / 11.0
    return ap


def ranking_pr(scores: np.ndarray, positive: np.ndarray, n_positive: int | None = None):
    """Precision and recall down a ranking by descending score (a stable sort, as the devkit's).

    `positive[i]` says whether item i is a true positive; `n_positive` (default: their count) is
    the recall denominator, larger when some positives were never ranked (missed detections)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(positive, dtype=bool)[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
    npos = float(tp.sum() if n_positive is None else n_positive)
    recall = ctp / max(npos, np.finfo(np.float64).eps)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision


def voc07_mean_ap(
    scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
) -> tuple[float, list[float]]:
    """VOC2007 classification mAP in percent with the devkit's 11-point interpolated AP per class.

    Same inputs and conventions as `voc_mean_ap` (targets 1 / 0 / -1, -1 left out of the class's
    ranking, a class without positives gets nan and is left out of the mean). This is the figure
    the paper's classification column (and Krähenbühl et al.'s protocol) reports."""
    return _mean_class_ap(scores, targets, lambda y, s: voc07_ap(*ranking_pr(s, y)))


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


class ConfusionMatrix:
    """Pixel confusion matrix for segmentation (torchvision references' `ConfusionMatrix`).

    Rows are ground truth, columns predictions; pixels whose ground truth is `ignore_index` (255)
    are skipped. `compute()` gives pixel accuracy (correct / labelled pixels), per-class IU
    = TP / (TP + FP + FN) and mean IU over the classes that occur in the ground truth or the
    predictions (a class with an empty union has no IU and is left out of the mean).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        t = target.flatten().to(torch.int64).cpu()
        p = pred.flatten().to(torch.int64).cpu()
        k = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
        n = self.num_classes
        self.mat += torch.bincount(n * t[k] + p[k], minlength=n * n).reshape(n, n)

    def reduce_from_all_processes(self) -> None:
        if _is_dist():
            mat = self.mat.clone()
            dist.all_reduce(mat)
            self.mat = mat

    def compute(self) -> dict[str, Any]:
        h = self.mat.double()
        tp = torch.diag(h)
        union = h.sum(0) + h.sum(1) - tp
        iu = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        labelled = h.sum()
        return {
            "pixel_acc": 100.0 * (tp.sum() / labelled).item() if labelled > 0 else float("nan"),
            "mIoU": 100.0 * float(np.nanmean(iu.numpy())) if (union > 0).any() else float("nan"),
            "per_class_iou": [100.0 * float(v) for v in iu],
        }


def coco_gt_from_targets(
    targets: list[dict[str, Any]], image_sizes: list[tuple[int, int]], num_classes: int
):
    """A pycocotools COCO ground truth built from VOCDetection-style targets.

    Difficult objects become `iscrowd=1`: pycocotools then neither counts them as positives nor
    a detection matched to them as a false positive, which is the VOC rule for difficult objects
    (for crowd regions the overlap is intersection over detection area, a small difference from
    VOC's IoU).
    """
    from pycocotools.coco import COCO

    images, anns = [], []
    for t, (h, w) in zip(targets, image_sizes, strict=True):
        img_id = int(t["image_id"])
        images.append({"id": img_id, "height": int(h), "width": int(w)})
        difficult = t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))
        for box, label, diff in zip(
            t["boxes"].tolist(), t["labels"].tolist(), difficult.tolist(), strict=True
        ):
            x0, y0, x1, y1 = box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(bool(diff)),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class DetectionEvaluator:
    """`CocoEvaluator` for boxes: update(predictions) / synchronize / summarize() -> metrics.

    `predictions` maps image_id -> {"boxes": xyxy, "scores", "labels"} in the ground truth's image
    coordinates; `label_to_cat_id` maps contiguous labels to the ground truth's category ids
    (identity for VOC data). Numbers are pycocotools' COCOeval bbox statistics in percent:
    AP (IoU .50:.05:.95), AP50 (IoU 0.5; pycocotools interpolates precision at 101 recall points,
    VOC2007 at 11: the paper's VOC07 number is `VOCDetectionEvaluator`'s) and AP75, plus per-class
    AP and AP50.
    """

    def __init__(self, coco_gt, label_to_cat_id: dict[int, int] | None = None) -> None:
        self.coco_gt = copy.deepcopy(coco_gt)
        self.label_to_cat_id = label_to_cat_id
        self.results: list[dict[str, Any]] = []
        self.img_ids: list[int] = []

    def update(self, predictions: dict[int, dict[str, torch.Tensor]]) -> None:
        for img_id, p in predictions.items():
            self.img_ids.append(int(img_id))
            for box, score, label in zip(
                p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
            ):
                cat = self.label_to_cat_id[int(label)] if self.label_to_cat_id else int(label)
                x0, y0, x1, y1 = box
                self.results.append(
                    {
                        "image_id": int(img_id),
                        "category_id": cat,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(score),
                    }
                )

    def synchronize_between_processes(self) -> None:
        if _is_dist():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.results, self.img_ids))
            self.results = [r for res, _ in gathered for r in res]
            self.img_ids = [i for _, ids in gathered for i in ids]

    def summarize(self) -> dict[str, Any]:
        from pycocotools.cocoeval import COCOeval

        img_ids = sorted(set(self.img_ids)) or sorted(self.coco_gt.getImgIds())
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = (
                self.coco_gt.loadRes(self.results) if self.results else _empty_results(self.coco_gt)
            )
            ev = COCOeval(self.coco_gt, coco_dt, "bbox")
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [max(float(v), 0.0) * 100.0 if v >= 0 else float("nan") for v in ev.stats[:3]]
        precision = ev.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
        per_class_ap, per_class_ap50 = {}, {}
        for k, cat in enumerate(ev.params.catIds):
            p_all = precision[:, :, k, 0, -1]
            p50 = precision[0, :, k, 0, -1]
            name = self.coco_gt.cats[cat].get("name", str(cat))
            per_class_ap[name] = (
                100.0 * float(p_all[p_all > -1].mean()) if (p_all > -1).any() else float("nan")
            )
            per_class_ap50[name] = (
                100.0 * float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan")
            )
        return {
            "AP": stats[0],
            "AP50": stats[1],
            "AP75": stats[2],
            "per_class_AP": per_class_ap,
            "per_class_AP50": per_class_ap50,
        }


def _empty_results(coco_gt):
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "annotations": [],
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def devkit_iou(box: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each row of `gt_boxes`, by the VOC devkit's pixel rule.

    Boxes come in as cebench's 0-based continuous xyxy (the readers' x1 = xmin - 1, x2 = xmax).
    They are turned back into the devkit's 1-based inclusive pixel indices (xmin = x1 + 1,
    xmax = x2) and measured as `VOCevaldet.m` / Fast R-CNN's `voc_eval` do, with +1 widths
    (iw = min(xmax) - max(xmin) + 1, clamped at 0); on an annotation's own numbers this is the
    devkit's overlap exactly (and equal to the continuous IoU of the 0-based boxes)."""
    b = np.asarray(box, dtype=np.float64).copy()
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[[0, 1]] += 1.0  # -> devkit xmin, ymin (1-based); xmax, ymax are unchanged
    g[:, [0, 1]] += 1.0
    iw = np.maximum(np.minimum(b[2], g[:, 2]) - np.maximum(b[0], g[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(b[3], g[:, 3]) - np.maximum(b[1], g[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    area_g = (g[:, 2] - g[:, 0] + 1.0) * (g[:, 3] - g[:, 1] + 1.0)
    return inter / np.maximum(area_b + area_g - inter, np.finfo(np.float64).eps)


class VOCDetectionEvaluator:
    """VOC2007 detection mAP at IoU 0.5 with the 11-point AP: update / synchronize / compute.

    The PASCAL VOC devkit's `VOCevaldet.m` (as Fast R-CNN's `voc_eval(..., use_07_metric=True)`,
    which scored the paper's detection column). Per class, the detections of all images are ranked
    by descending score (a stable sort); each is compared with every ground-truth box of its class
    in its image and assigned to the one of highest IoU (`devkit_iou`, +1 pixel widths). If that
    IoU is >= `iou_thresh` (the MATLAB devkit's test; the Python `voc_eval` uses >): a `difficult`
    box makes the detection count as neither TP nor FP; an unclaimed box makes it a TP and claims
    the box; a box already claimed by a higher-scored detection makes it a FP (a duplicate; the
    devkit does not move on to the next-best box). Below the threshold it is a FP. Recall is over
    the non-difficult boxes of the class; AP is `voc07_ap` of `ranking_pr`. A class without
    non-difficult boxes gets AP nan and is left out of the mean.

    `ground_truth` maps image_id -> {"boxes" xyxy (0-based, continuous), "labels", "difficult"};
    every image in it is evaluated (one with no detections still counts its boxes).
    `predictions` in `update` map image_id -> {"boxes", "scores", "labels"}, labels mapped to the
    ground truth's through `label_to_cat_id` (identity when None). `class_names` (category id ->
    name) names the per-class entries.
    """

    def __init__(
        self,
        ground_truth: dict[int, dict[str, Any]],
        label_to_cat_id: dict[int, int] | None = None,
        class_names: dict[int, str] | None = None,
        iou_thresh: float = 0.5,
    ) -> None:
        self.gt = {
            int(i): {
                "boxes": np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4),
                "labels": np.asarray(t["labels"], dtype=np.int64).reshape(-1),
                "difficult": np.asarray(
                    t.get("difficult", np.zeros(len(t["labels"]), dtype=bool)), dtype=bool
                ).reshape(-1),
            }
            for i, t in ground_truth.items()
        }
        self.label_to_cat_id = label_to_cat_id
        self.iou_thresh = iou_thresh
        cats = sorted(
            {int(c) for t in self.gt.values() for c in t["labels"]} | set(class_names or {})
        )
        self.class_names = {c: (class_names or {}).get(c, str(c)) for c in cats}
        self.detections: list[tuple[int, int, float, list[float]]] = []  # image, cat, score, box

    @classmethod
    def from_coco(cls, coco_gt, label_to_cat_id: dict[int, int] | None = None, **kwargs: Any):
        """From a pycocotools COCO ground truth (`iscrowd` = difficult, as `coco_gt_from_targets`)."""
        gt: dict[int, dict[str, Any]] = {}
        for img_id in coco_gt.getImgIds():
            anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id]))
            gt[int(img_id)] = {
                "boxes": np.array(
                    [
                        [
                            a["bbox"][0],
                            a["bbox"][1],
                            a["bbox"][0] + a["bbox"][2],
                            a["bbox"][1] + a["bbox"][3],
                        ]
                        for a in anns
                    ],
                    dtype=np.float64,
                ).reshape(-1, 4),
                "labels": np.array([a["category_id"] for a in anns], dtype=np.int64),
                "difficult": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            }
        names = {int(c): str(v.get("name", c)) for c, v in coco_gt.cats.items()}
        return cls(gt, label_to_cat_id, names, **kwargs)

    def update(self, predictions: dict[int, dict[str, torch.Tensor]]) -> None:
        for img_id, p in predictions.items():
            for box, score, label in zip(
                p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
            ):
                cat = self.label_to_cat_id[int(label)] if self.label_to_cat_id else int(label)
                self.detections.append((int(img_id), cat, float(score), [float(v) for v in box]))

    def synchronize_between_processes(self) -> None:
        if _is_dist():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.detections)
            self.detections = [d for part in gathered for d in part]

    def class_ap(self, cat: int) -> float:
        """11-point AP (in [0, 1]) of one category id; nan without non-difficult boxes."""
        gts = {
            i: (t["boxes"][t["labels"] == cat], t["difficult"][t["labels"] == cat])
            for i, t in self.gt.items()
        }
        n_pos = int(sum((~d).sum() for _, d in gts.values()))
        if n_pos == 0:
            return float("nan")
        # images in id order, detections in arrival order: the devkit's order before its stable sort
        dets = sorted(
            (d for d in self.detections if d[1] == cat and d[0] in gts), key=lambda d: d[0]
        )
        scores = np.array([d[2] for d in dets], dtype=np.float64)
        claimed = {i: np.zeros(len(b), dtype=bool) for i, (b, _) in gts.items()}
        kept_scores, tp = [], []
        for k in np.argsort(-scores, kind="stable"):
            img, _, score, box = dets[k]
            boxes, difficult = gts[img]
            ov = devkit_iou(np.array(box), boxes) if len(boxes) else np.zeros(0)
            j = int(ov.argmax()) if len(ov) else -1
            if j >= 0 and ov[j] >= self.iou_thresh:
                if difficult[j]:
                    continue  # neither TP nor FP
                hit = not claimed[img][j]
                claimed[img][j] = True
            else:
                hit = False
            kept_scores.append(score)
            tp.append(hit)
        if not tp:
            return 0.0
        recall, precision = ranking_pr(np.array(kept_scores), np.array(tp), n_pos)
        return voc07_ap(recall, precision)

    def compute(self) -> dict[str, Any]:
        """{"mAP_voc07": mean over classes in percent, "per_class_AP_voc07": {name: AP %}}."""
        per_class = {name: 100.0 * self.class_ap(cat) for cat, name in self.class_names.items()}
        valid = [v for v in per_class.values() if not math.isnan(v)]
        return {
            "mAP_voc07": float(np.mean(valid)) if valid else float("nan"),
            "per_class_AP_voc07": per_class,
        }

    summarize = compute  # the name DetectionEvaluator uses


def per_class_table(values: dict[str, float], metric: str) -> str:
    """The per-class numbers as lines to print under a run's summary, one class a line, named
    as the dataset names them ("  apple      0.70" under "  class  AP (VOC07, %)")."""
    width = max([len("class"), *(len(str(name)) for name in values)])
    lines = [f"  {'class':<{width}}  {metric}"]
    lines += [f"  {name:<{width}}  {value:>{len(metric)}.2f}" for name, value in values.items()]
    return "\n".join(lines)
