"""Paired comparison of two models over the validation cases both have, as in the Teach-Former paper.

The case-level score is the mean Dice over the foreground labels of the case, skipping labels that
nnU-Net scores NaN (absent in both prediction and reference); a case where every label is NaN has no
score and is left out (counted in ``excluded``). Differences are reference minus other, so a positive
mean difference and effect size favour the reference. Tests: scipy's paired t-test (``ttest_rel``) and
Wilcoxon signed-rank test (``wilcoxon``), both two-sided with scipy's defaults; effect size Cohen's
d_z = mean(difference) / sd(difference) (sample sd). Degenerate inputs give NaN and a note, not an error:
fewer than two paired cases, identical scores, or a constant difference (t and d_z undefined).
"""
import warnings
from dataclasses import dataclass
from typing import Dict

import numpy as np
from scipy import stats

from nnunet_teachformer.evaluation.metrics import CaseValues, case_score


@dataclass(frozen=True)
class PairedTest:
    reference: str
    other: str
    n: int  # paired cases
    excluded: int  # cases of either model without a score or without a partner
    mean_reference: float
    mean_other: float
    mean_difference: float
    t_statistic: float
    t_p: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    cohens_dz: float
    note: str = ""


def case_scores(dice: CaseValues) -> Dict[str, float]:
    return {case: case_score(values) for case, values in dice.items()}


def paired_test(reference: str, reference_dice: CaseValues, other: str, other_dice: CaseValues) -> PairedTest:
    ref_scores, other_scores = case_scores(reference_dice), case_scores(other_dice)
    cases = sorted(c for c in set(ref_scores) & set(other_scores)
                   if not np.isnan(ref_scores[c]) and not np.isnan(other_scores[c]))
    excluded = len(set(ref_scores) | set(other_scores)) - len(cases)
    a = np.array([ref_scores[c] for c in cases])
    b = np.array([other_scores[c] for c in cases])
    nan = float("nan")
    if len(cases) < 2:
        return PairedTest(reference, other, len(cases), excluded, float(np.mean(a)) if len(a) else nan,
                          float(np.mean(b)) if len(b) else nan, float(np.mean(a - b)) if len(a) else nan,
                          nan, nan, nan, nan, nan, "fewer than 2 paired cases: no test")
    diff = a - b
    base = dict(reference=reference, other=other, n=len(cases), excluded=excluded, mean_reference=float(a.mean()),
                mean_other=float(b.mean()), mean_difference=float(diff.mean()))
    if np.all(diff == 0):
        return PairedTest(**base, t_statistic=nan, t_p=nan, wilcoxon_statistic=nan, wilcoxon_p=nan, cohens_dz=nan,
                          note="identical per-case scores: no test")
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
