"""Paired comparison of a declared reference model with every other model over the validation cases both have.

Case score: the mean Dice over the foreground labels of the case, where a label nnU-Net scores NaN (absent
from both prediction and reference: a correct empty prediction) counts as 1 and a false positive on an
empty label as 0 (``metrics.dice_empty_rule``), so no case is dropped from a pair for a NaN. Only cases
one model has and the other lacks (a fold missing on one side) are unpaired, and counted.

Differences are reference minus other, so a positive difference favours the reference. Per comparison:
scipy's paired t-test (``ttest_rel``) and Wilcoxon signed-rank test (``wilcoxon``), both two-sided with
scipy's defaults; Cohen's d_z = mean / sd of the differences (sample sd); the effect size is the mean
difference with a 95 % percentile bootstrap confidence interval (scipy's ``bootstrap``, 10 000 resamples of
the cases, fixed seed), over all paired cases (pooled over folds) and per fold. The p-values of one table
are one family per test (reference vs each other model) and are Holm-corrected (``holm``).
Degenerate inputs give NaN and a note, not an error: fewer than two paired cases, identical scores, or
a constant difference (t and d_z undefined).
"""
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from nnunet_teachformer.evaluation.metrics import CaseValues, case_score

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed, so the same results give the same report
CONFIDENCE = 0.95


@dataclass(frozen=True)
class EffectSize:
    """Mean per-case difference (reference - other) with its percentile bootstrap confidence interval."""
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedTest:
    reference: str
    other: str
    n: int  # paired cases
    unpaired: int  # cases only one of the two models validated
    mean_reference: float
    mean_other: float
    mean_difference: float
    ci_low: float  # bootstrap CI of mean_difference, pooled over folds
    ci_high: float
    t_statistic: float
    t_p: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    cohens_dz: float
    note: str = ""
    t_p_holm: float = float("nan")  # set by ``holm_corrected`` over the table's comparisons
    wilcoxon_p_holm: float = float("nan")
    per_fold: Dict[int, EffectSize] = field(default_factory=dict)


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample sd (ddof 1) of fold values, the report's and the model card's: a NaN value (a fold where
    the measure is undefined) is left out, as nnU-Net leaves NaN cases out of its means; the mean is NaN
    without any defined value, the sd NaN with fewer than two."""
    defined = [float(v) for v in values if not np.isnan(v)]
    if not defined:
        return float("nan"), float("nan")
    return float(np.mean(defined)), float(np.std(defined, ddof=1)) if len(defined) > 1 else float("nan")


def case_scores(dice: CaseValues) -> Dict[str, float]:
    return {case: case_score(values) for case, values in dice.items()}


def holm(p_values: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values, in the input order. NaN p-values (no test) are not part of the
    family and stay NaN. The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def holm_corrected(tests: Sequence[PairedTest]) -> List[PairedTest]:
    """The tests with Holm-corrected p-values, one family per test (t-test, Wilcoxon) over the comparisons."""
    t_holm = holm([t.t_p for t in tests])
    w_holm = holm([t.wilcoxon_p for t in tests])
    return [dataclasses.replace(t, t_p_holm=a, wilcoxon_p_holm=b) for t, a, b in zip(tests, t_holm, w_holm)]


def bootstrap_effect(differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> EffectSize:
    """Mean difference and its 95 % percentile bootstrap CI (cases resampled with replacement); the CI is NaN
    with fewer than two cases."""
    d = np.asarray(differences, dtype=float)
    nan = float("nan")
    if len(d) == 0:
        return EffectSize(0, nan, nan, nan)
    if len(d) < 2:
        return EffectSize(1, float(d[0]), nan, nan)
    if np.ptp(d) == 0:  # every resample has the same mean
        return EffectSize(len(d), float(d[0]), float(d[0]), float(d[0]))
    ci = stats.bootstrap((d,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return EffectSize(len(d), float(d.mean()), float(ci.low), float(ci.high))


def paired_test(reference: str, reference_dice: CaseValues, other: str, other_dice: CaseValues,
                case_folds: Optional[Mapping[str, int]] = None) -> PairedTest:
    """Reference vs other over the cases both have; ``case_folds`` (case -> fold of the reference) adds the
    effect size per fold."""
    ref_scores, other_scores = case_scores(reference_dice), case_scores(other_dice)
    cases = sorted(c for c in set(ref_scores) & set(other_scores)
                   if not np.isnan(ref_scores[c]) and not np.isnan(other_scores[c]))
    unpaired = len(set(ref_scores) | set(other_scores)) - len(cases)
    a = np.array([ref_scores[c] for c in cases])
    b = np.array([other_scores[c] for c in cases])
    diff = a - b
    pooled = bootstrap_effect(diff)
    per_fold = {}
    for fold in sorted(set((case_folds or {}).values())):
        mine = [i for i, c in enumerate(cases) if case_folds.get(c) == fold]
        per_fold[fold] = bootstrap_effect(diff[mine])
    nan = float("nan")
    base = dict(reference=reference, other=other, n=len(cases), unpaired=unpaired,
                mean_reference=float(a.mean()) if len(a) else nan, mean_other=float(b.mean()) if len(b) else nan,
                mean_difference=pooled.mean_difference, ci_low=pooled.ci_low, ci_high=pooled.ci_high,
                per_fold=per_fold)
    no_test = dict(t_statistic=nan, t_p=nan, wilcoxon_statistic=nan, wilcoxon_p=nan, cohens_dz=nan)
    if len(cases) < 2:
        return PairedTest(**base, **no_test, note="fewer than 2 paired cases: no test")
    if np.all(diff == 0):
        return PairedTest(**base, **no_test, note="identical per-case scores: no test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wilcoxon = stats.wilcoxon(a, b)
        if np.ptp(diff) <= 1e-12 * max(1.0, abs(float(diff.mean()))):
            return PairedTest(**base, t_statistic=nan, t_p=nan, wilcoxon_statistic=float(wilcoxon.statistic),
                              wilcoxon_p=float(wilcoxon.pvalue), cohens_dz=nan,
                              note="constant difference: t-test and d_z undefined")
        t = stats.ttest_rel(a, b)
    return PairedTest(**base, t_statistic=float(t.statistic), t_p=float(t.pvalue),
                      wilcoxon_statistic=float(wilcoxon.statistic), wilcoxon_p=float(wilcoxon.pvalue),
                      cohens_dz=float(diff.mean() / diff.std(ddof=1)))
