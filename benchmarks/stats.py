"""Which arms differ from the reference row: Welch's t-test over seeds, Holm-corrected per column.

    from cebench.benchmarks.stats import compare
    results = compare(rows, meta, columns)      # one Comparison per (arm, column)

With a few seeds "above random init" is a statistical claim, so the tables mark it with a test
instead of leaving it to the reader's eye:

- each arm's per-seed values of a column are compared with the reference arm's (the suite's
  `reference`, by default the arm named `random`) by Welch's unequal-variance t-test, two-sided
  (`scipy.stats.ttest_ind(equal_var=False)`), which needs at least 2 seeds on both sides;
- the p-values of one column (one per arm) are Holm-Bonferroni corrected (Holm, 1979), so a column
  with 8 arms does not hand out a false "above" one time in 2.5 at alpha 0.05;
- an arm is marked above (▲) or below (▼) the reference when its corrected p-value is below the
  suite's `alpha` (0.05); for a lower-is-better column (time, inpainting L2) "above" still means a
  larger value, and the marker's meaning is in the footer.

The 95% confidence interval of the difference (Welch-Satterthwaite degrees of freedom) is written
beside the p-values in OUT/summary.csv. `decided()` says whether a comparison needs more seeds:
it is decided when the corrected test rejects, or when the interval lies within +-`min_effect`
(the difference is known to be smaller than anything worth reporting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ABOVE, BELOW = "▲", "▼"


@dataclass
class Comparison:
    arm: str
    task: str
    metric: str
    label: str  # the column's label
    n: int
    mean: float
    std: float | None
    reference: str
    n_ref: int
    diff: float | None = None  # mean - reference mean (in the column's scale)
    ci_low: float | None = None  # 95% interval of diff (Welch)
    ci_high: float | None = None
    p: float | None = None  # two-sided Welch p-value
    p_holm: float | None = None  # Holm-corrected across the arms of the column
    sign: str = ""  # ABOVE, BELOW or ""

    def decided(self, alpha: float, min_effect: float) -> bool:
        if self.p_holm is not None and self.p_holm < alpha:
            return True
        if self.ci_low is None or self.ci_high is None:
            # no test: two constant sides (no spread) are as decided as they will ever be
            return self.n_ref > 1 and self.n > 1 and self.std == 0.0 and self.diff is not None
        return -min_effect <= self.ci_low and self.ci_high <= min_effect


def welch(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """(p, ci_low, ci_high) of mean(xs) - mean(ys) by Welch's t-test; None with fewer than 2
    values on a side or no variance on either side (the test is undefined)."""
    from scipy import stats

    nx, ny = len(xs), len(ys)
    if nx < 2 or ny < 2 or not all(math.isfinite(v) for v in (*xs, *ys)):
        return None  # (a NaN would poison the Holm correction of the whole column)
    mx, my = sum(xs) / nx, sum(ys) / ny
    vx = sum((x - mx) ** 2 for x in xs) / (nx - 1)
    vy = sum((y - my) ** 2 for y in ys) / (ny - 1)
    se2 = vx / nx + vy / ny
    if se2 <= 0:
        return None
    t = (mx - my) / math.sqrt(se2)
    df = se2**2 / ((vx / nx) ** 2 / (nx - 1) + (vy / ny) ** 2 / (ny - 1))
    p = 2 * stats.t.sf(abs(t), df)
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    return float(p), (mx - my) - half, (mx - my) + half


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None; the rest are corrected together)."""
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m, out, running = len(idx), list(ps), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def reference_arm(meta: dict[str, Any]) -> str:
    """The suite's `reference` arm, else the arm named 'random', else '' (no comparison)."""
    names = [a["name"] for a in meta.get("arms", [])]
    ref = meta.get("reference") or ("random" if "random" in names else "")
    return ref if ref in names else ""


def compare(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    columns: list[Any],
    values_of: Any,
    reference: str | None = None,
) -> list[Comparison]:
    """One Comparison per arm and score column (`columns`: tables.Column; paper and pretraining
    time columns are skipped); `values_of(rows, arm, task, metric)` gives the per-seed values."""
    ref = reference if reference is not None else reference_arm(meta)
    alpha = float(meta.get("alpha") or 0.05)
    out: list[Comparison] = []
    for c in columns:
        if c.paper or c.task == "pretrain":
            continue
        ys = [v * c.scale for v in values_of(rows, ref, c.task, c.metric)] if ref else []
        column: list[Comparison] = []
        for arm in meta["arms"]:
            xs = [v * c.scale for v in values_of(rows, arm["name"], c.task, c.metric)]
            if not xs:
                continue
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
            cmp = Comparison(arm["name"], c.task, c.metric, c.label, len(xs), mean, std, ref, len(ys))
            if ys and arm["name"] != ref:
                cmp.diff = mean - sum(ys) / len(ys)
                test = welch(xs, ys)
                if test is not None:
                    cmp.p, cmp.ci_low, cmp.ci_high = test
            column.append(cmp)
        for cmp, p_adj in zip(column, holm([x.p for x in column]), strict=True):
            cmp.p_holm = p_adj
            if p_adj is not None and p_adj < alpha and cmp.diff is not None:
                cmp.sign = ABOVE if cmp.diff > 0 else BELOW
        out += column
    return out


def footer(meta: dict[str, Any], reference: str | None = None) -> str:
    ref = reference if reference is not None else reference_arm(meta)
    if not ref:
        return ""
    label = next((a.get("label") or a["name"] for a in meta["arms"] if a["name"] == ref), ref)
    alpha = float(meta.get("alpha") or 0.05)
    return (
        f"{ABOVE} / {BELOW}: mean above / below {label}'s (two-sided Welch's t-test over seeds, "
        f"Holm-corrected over the arms of each column, p < {alpha:g}); no marker: not shown "
        "to differ (p-values and 95% intervals in summary.csv)"
    )


def findings(comparisons: list[Comparison], meta: dict[str, Any]) -> list[str]:
    """Markdown bullets, one per column: which arms are above / below the reference, and which
    are not shown to differ. The README's reading of the table is these lines."""
    ref = next((c.reference for c in comparisons if c.reference), "")
    if not ref:
        return []
    labels = {a["name"]: a.get("label") or a["name"] for a in meta["arms"]}
    lines = []
    by_col: dict[str, list[Comparison]] = {}
    for c in comparisons:
        if c.arm != ref:
            by_col.setdefault(c.label, []).append(c)
    for label, cmps in by_col.items():
        if not any(c.n_ref for c in cmps):
            continue
        parts = []
        for sign, word in ((ABOVE, "above"), (BELOW, "below")):
            arms = [labels[c.arm] for c in cmps if c.sign == sign]
            if arms:
                parts.append(f"{word}: {', '.join(arms)}")
        same = [labels[c.arm] for c in cmps if not c.sign and c.p is not None]
        if same:
            parts.append(f"not shown to differ: {', '.join(same)}")
        untested = [labels[c.arm] for c in cmps if c.p is None]
        if untested:
            parts.append(
                f"not tested (fewer than 2 seeds on a side, or no spread): {', '.join(untested)}"
            )
        lines.append(f"- **{label}** vs {labels[ref]}: " + "; ".join(parts))
    return lines
