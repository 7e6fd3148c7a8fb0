"""The report's rows and how they are written: the model table, the paired-test tables, the CSV files and the
text of report.md (``report`` computes the rows and writes the files).

A row is one model (or one teacher set of a distilled model): Dice per fold from nnU-Net's ``summary.json``,
HD95 per case, complexity and latency, with mean +- sd over folds (``statistics.mean_sd``). Markdown cells
show percent (Dice) or millimetres (HD95) with "n/a" for what is undefined; CSV cells keep fractions and
leave undefined values empty.
"""
import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunet_teachformer.evaluation.complexity import Complexity
from nnunet_teachformer.evaluation.latency import Latency
from nnunet_teachformer.evaluation.metrics import CaseValues, case_score, count_undefined
from nnunet_teachformer.evaluation.results import ROLE_DISTILLED, ModelResults, teacher_set_label
from nnunet_teachformer.evaluation.statistics import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EffectSize, PairedTest,
                                                      mean_sd)

SIGNIFICANCE = 0.05
UNVERIFIED_MARK = "†"  # taught by a teacher without a provenance record of its own
FAILED_TEACHER_MARK = "‡"  # taught by a teacher that failed on the student's inner hold-out


def _nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class ModelRow:
    model: ModelResults
    labels: Tuple[int, ...]
    hd95: Dict[int, CaseValues] = field(default_factory=dict)  # fold -> per case, per label
    complexity: Optional[Complexity] = None
    latency: Optional[Latency] = None
    notes: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model.name

    def fold_dice(self, label) -> Dict[int, float]:
        """nnU-Net's summary value per available fold: ``label`` an int, or "fg" for the foreground mean."""
        return {f: float(r.summary["foreground_mean"]["Dice"] if label == "fg" else r.summary["mean"][label]["Dice"])
                for f, r in sorted(self.model.folds.items())}

    def dice(self, label) -> Tuple[float, float]:
        """Mean +- sd over folds; NaN unless every requested fold is there."""
        return mean_sd(list(self.fold_dice(label).values())) if self.model.complete else (math.nan, math.nan)

    def fold_hd95(self, label) -> Dict[int, float]:
        """Per fold: mean over cases with a defined HD95, per label; "fg": mean over the labels."""
        result = {}
        for fold, cases in sorted(self.hd95.items()):
            per_label = {lb: _nanmean([c[lb] for c in cases.values()]) for lb in self.labels}
            result[fold] = float(np.mean(list(per_label.values()))) if label == "fg" else per_label[label]
        return result

    def hd95_mean(self, label) -> Tuple[float, float]:
        return mean_sd(list(self.fold_hd95(label).values())) if self.model.complete else (math.nan, math.nan)

    @property
    def hd95_undefined(self) -> int:
        return sum(count_undefined(v) for v in self.hd95.values())

    @property
    def dice_empty_correct(self) -> int:
        """(case, label) values nnU-Net scored NaN (correct empty prediction), counted as Dice 1 in the tests."""
        return count_undefined(self.model.case_dice())

    @property
    def display_name(self) -> str:
        return self.name + (f" {UNVERIFIED_MARK}" if self.model.teacher_warnings else "") + \
            (f" {FAILED_TEACHER_MARK}" if self.model.failed_teachers else "")


def _percent(value: Tuple[float, float]) -> str:
    mean, sd = value
    if np.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + ("" if np.isnan(sd) else f" ± {100 * sd:.2f}")


def _plain(value: Tuple[float, float], digits: int = 2) -> str:
    mean, sd = value
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")


def _p(value: float, star: bool = False) -> str:
    """A p-value; ``star``: marked * below the significance level (used for Holm-corrected values only)."""
    if np.isnan(value):
        return "n/a"
    return (f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}") + ("*" if star and value < SIGNIFICANCE else "")


def _delta(mean: float, low: float, high: float) -> str:
    """A Dice difference in percentage points with its CI."""
    if np.isnan(mean):
        return "n/a"
    return f"{100 * mean:+.2f}" + ("" if np.isnan(low) else f" [{100 * low:+.2f}, {100 * high:+.2f}]")


def _effect(effect: Optional[EffectSize]) -> str:
    return "n/a" if effect is None or not effect.n else \
        f"{_delta(effect.mean_difference, effect.ci_low, effect.ci_high)} (n={effect.n})"


def _folds_cell(model: ModelResults) -> str:
    have = ", ".join(map(str, sorted(model.folds))) or "none"
    return have if not model.missing else f"{have} (missing {', '.join(map(str, sorted(model.missing)))})"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def model_table(rows: Sequence[ModelRow], label_names: Dict[int, str], labels, reference: Optional[ModelRow],
                tests: Dict[str, PairedTest]) -> str:
    header = ["Model", "Role", "Folds"] + [f"Dice {label_names.get(lb, lb)} (%)" for lb in labels] + \
             ["Dice mean (%)", "HD95 mean (mm)", "Params (M)", "GFLOPs", "Time/case (s)",
              "ΔDice vs reference (pp) [95 % CI]", "p Holm (t / W)"]
    table = []
    for row in rows:
        incomplete = not row.model.complete
        cells = [f"**{row.display_name}**" if row is reference else row.display_name, row.model.role,
                 _folds_cell(row.model)]
        cells += ["incomplete" if incomplete else _percent(row.dice(lb)) for lb in labels]
        cells += ["incomplete" if incomplete else _percent(row.dice("fg")),
                  "incomplete" if incomplete else _plain(row.hd95_mean("fg"))]
        c, t = row.complexity, row.latency
        cells += [f"{c.parameters / 1e6:.3f}" if c else "n/a", f"{c.gflops:.2f}" if c else "n/a",
                  f"{t.seconds:.2f}" if t else "n/a"]
        if row is reference:
            cells += ["reference", "reference"]
        elif row.name in tests:
            test = tests[row.name]
            cells += [_delta(test.mean_difference, test.ci_low, test.ci_high),
                      f"{_p(test.t_p_holm, star=True)} / {_p(test.wilcoxon_p_holm, star=True)} (n={test.n})"]
        else:
            cells += ["n/a", "n/a"]
        table.append(cells)
    return _markdown_table(header, table)


FOLD_ALL_NOTE = ("nnU-Net's fold all trains on every case and validates on those same cases, so this is no "
                 "cross-validated estimate: it shows that the model to deploy trained, not how well it generalises.")


def fold_all_table(models: Sequence[ModelResults], label_names: Dict[int, str], labels) -> Optional[str]:
    """The models trained on fold ``all``: their Dice on their own training cases (nnU-Net's validation of fold
    all), apart from the cross-validated table. None if no model has fold all."""
    import json

    rows = []
    for folder, model in {m.folder: m for m in models}.items():
        fold_folder = folder / "fold_all"
        summary_file = fold_folder / "validation" / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            dice = [f"{100 * summary['mean'][str(lb)]['Dice']:.2f}" for lb in labels]
            rows.append([model.name, model.role, *dice, f"{100 * summary['foreground_mean']['Dice']:.2f}"])
        elif fold_folder.is_dir():
            done = "trained, not validated" if (fold_folder / "checkpoint_final.pth").is_file() else "training"
            rows.append([model.name, model.role, *["—"] * len(labels), done])
    header = ["Model", "Role", *[f"Dice {label_names.get(lb, lb)} on training cases (%)" for lb in labels],
              "Foreground Dice (%)"]
    return _markdown_table(header, rows) if rows else None


def _tests_table(tests: Sequence[PairedTest]) -> str:
    header = ["Other", "n", "Reference Dice (%)", "Other Dice (%)", "ΔDice (pp) [95 % CI]", "t", "p (t-test)",
              "p Holm (t-test)", "W", "p (Wilcoxon)", "p Holm (Wilcoxon)", "Cohen's d_z", "Note"]
    rows = [[t.other, str(t.n), f"{100 * t.mean_reference:.2f}", f"{100 * t.mean_other:.2f}",
             _delta(t.mean_difference, t.ci_low, t.ci_high), f"{t.t_statistic:.3f}", _p(t.t_p),
             _p(t.t_p_holm, star=True), f"{t.wilcoxon_statistic:.1f}", _p(t.wilcoxon_p),
             _p(t.wilcoxon_p_holm, star=True), f"{t.cohens_dz:.2f}",
             "; ".join(filter(None, [t.note, f"{t.unpaired} unpaired case(s)" if t.unpaired else ""]))]
            for t in tests]
    return _markdown_table(header, rows)


def _fold_effects_table(tests: Sequence[PairedTest], folds: Sequence[int]) -> str:
    header = ["Other"] + [f"fold {f}" for f in folds] + ["pooled"]
    rows = [[t.other] + [_effect(t.per_fold.get(f)) for f in folds] +
            [_effect(EffectSize(t.n, t.mean_difference, t.ci_low, t.ci_high))] for t in tests]
    return _markdown_table(header, rows)


def _teachers_lines(rows: Sequence[ModelRow]) -> List[str]:
    lines = []
    for row in rows:
        if row.model.role != ROLE_DISTILLED or not row.model.teachers:
            continue
        per_fold = "; ".join(f"fold {f}: {teacher_set_label(t)}" for f, t in sorted(row.model.teachers.items()))
        lines.append(f"- {row.display_name}: {per_fold}")
        lines += [f"  - {UNVERIFIED_MARK} {w}" for w in row.model.teacher_warnings]
        lines += [f"  - {FAILED_TEACHER_MARK} {w}" for w in row.model.failed_teachers]
        lines += [f"  - fold {f}: inner-hold-out Dice (weight) " + ", ".join(
                  f"{t.trainer} {'n/a' if t.inner_holdout_dice is None else f'{t.inner_holdout_dice:.3f}'}"
                  f"{'' if t.weight is None else f' ({t.weight:.3f})'}" for t in records)
                  for f, records in sorted(row.model.teachers.items())
                  if records and any(t.inner_holdout_dice is not None for t in records)]
    return lines


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    def cell(v):
        return "" if isinstance(v, float) and np.isnan(v) else v
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[cell(v) for v in r] for r in rows])
    return path


def models_csv(path: Path, rows: Sequence[ModelRow], labels, label_names, folds: Sequence[int]) -> Path:
    names = [label_names.get(lb, str(lb)) for lb in labels]
    header = ["model", "trainer", "plans", "configuration", "role", "folds_requested", "folds_available",
              "folds_missing", "complete"]
    header += [f"dice_{n}{s}" for n in names for s in ("", "_sd")] + ["dice_fg", "dice_fg_sd"]
    header += [f"dice_fg_fold{f}" for f in folds]
    header += ["dice_empty_correct"]
    header += [f"hd95_{n}" for n in names] + ["hd95_fg", "hd95_fg_sd", "hd95_undefined"]
    header += ["parameters", "gflops", "flop_device", "patch_size", "seconds_per_case", "timing_device",
               "timing_fold", "timing_case", "tta_mirroring", "teachers", "teacher_warnings", "failed_teachers",
               "notes"]
    table = []
    for row in rows:
        m, c, t = row.model, row.complexity, row.latency
        values = [row.name, m.trainer, m.plans, m.configuration, m.role, " ".join(map(str, folds)),
                  " ".join(map(str, sorted(m.folds))), " ".join(map(str, sorted(m.missing))), m.complete]
        for lb in labels:
            values += list(row.dice(lb))
        values += list(row.dice("fg"))
        per_fold = row.fold_dice("fg")
        values += [per_fold.get(f, float("nan")) for f in folds]
        values += [row.dice_empty_correct]
        values += [row.hd95_mean(lb)[0] for lb in labels] + list(row.hd95_mean("fg")) + [row.hd95_undefined]
        values += [c.parameters, c.gflops, c.flop_device, "x".join(map(str, c.patch_size))] if c else [""] * 4
        values += [t.seconds, t.device, t.fold, t.case, t.mirroring] if t else [""] * 5
        values += [" ".join(f"{f}:{teacher_set_label(r)}" for f, r in sorted(m.teachers.items())),
                   "; ".join(m.teacher_warnings), "; ".join(m.failed_teachers), "; ".join(row.notes)]
        table.append(values)
    return write_csv(path, header, table)


def tests_csv(path: Path, tests: Sequence[PairedTest], folds: Sequence[int]) -> Path:
    header = ["reference", "other", "n", "unpaired", "mean_reference", "mean_other", "mean_difference", "ci_low",
              "ci_high", "t_statistic", "t_p", "t_p_holm", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm",
              "cohens_dz", "note"]
    fold_header = [f"{k}_fold{f}" for f in folds for k in ("n", "mean_difference", "ci_low", "ci_high")]
    nan = EffectSize(0, math.nan, math.nan, math.nan)
    rows = [[getattr(t, h) for h in header] +
            [v for f in folds for v in dataclasses.astuple(t.per_fold.get(f, nan))] for t in tests]
    return write_csv(path, header + fold_header, rows)


def per_case_csv(path: Path, rows: Sequence[ModelRow], labels, label_names) -> Path:
    names = [label_names.get(lb, str(lb)) for lb in labels]
    header = ["model", "fold", "case"] + [f"dice_{n}" for n in names] + ["case_score"] + [f"hd95_{n}" for n in names]
    table = []
    for row in rows:
        for fold, result in sorted(row.model.folds.items()):
            for case, dice in sorted(result.dice.items()):
                hd = row.hd95.get(fold, {}).get(case, {})
                table.append([row.name, fold, case] + [dice.get(lb, float("nan")) for lb in labels] +
                             [case_score(dice)] + [hd.get(lb, float("nan")) for lb in labels])
    return write_csv(path, header, table)


def report_markdown(folders, folds, rows, table, tests, reference_rule, missing, figures, device, timing,
                    mirroring, challenge_lines, fold_all: Optional[str] = None) -> str:
    lines = [f"# Teach-Former report: {folders.name}", "",
             f"Folds requested: {', '.join(map(str, folds))}. Reference for the paired tests: **{reference_rule}**. "
             f"Dice in %, mean ± sd over folds (nnU-Net's validation summary.json). ΔDice = reference − other, mean "
             f"per-case Dice difference over all validation cases of the folds, in percentage points, with its "
             f"95 % bootstrap CI. p: Holm-corrected over the comparisons of this table (one family per test), "
             f"* corrected p < {SIGNIFICANCE}.", ""]
    if any(r.model.teacher_warnings for r in rows):
        lines += [f"{UNVERIFIED_MARK} taught (in at least one fold) by a teacher without a provenance record of its "
                  f"own (trained by nnU-Net itself: its cases are derived from splits_final.json, which may have "
                  f"changed since it trained), or with no record of its teachers: nothing the teacher wrote shows "
                  f"that it never trained on this student's validation cases (see Teachers).", ""]
    if any(r.model.failed_teachers for r in rows):
        lines += [f"{FAILED_TEACHER_MARK} taught (in at least one fold) by a teacher that failed on the student's "
                  f"inner hold-out: its foreground Dice there was far below the best teacher's, and unless its weight "
                  f"was 0 it was averaged into the distillation (see Teachers).", ""]
    lines += [table, ""] + challenge_lines
    if fold_all:
        lines += ["## Fold all (not cross-validated)", "", FOLD_ALL_NOTE, "", fold_all, ""]
    if missing:
        lines += ["## Missing", ""] + [f"- {m}" for m in missing] + [""]
        lines += ["Models with missing folds show no cross-validated Dice: it is never averaged over fewer folds.",
                  ""]
    lines += ["## Paired tests over validation cases", ""]
    if tests:
        lines += [_tests_table(tests), "",
                  "Difference = reference − other (positive: the reference is better). Cases paired by name; cases "
                  "only one model validated are left out and counted (unpaired). The star marks the Holm-corrected "
                  "p-value; raw p-values are shown for reference only.", "",
                  "### Effect size per fold", "",
                  "ΔDice (pp) [95 % bootstrap CI] over the validation cases of each fold (the reference's folds), "
                  "and pooled over the folds.", "", _fold_effects_table(tests, folds), ""]
    else:
        lines += [f"No paired tests: the reference is {reference_rule}.", ""]
    empty = [r for r in rows if r.model.folds]
    lines += ["## Empty labels", "",
              "nnU-Net scores Dice NaN for a label absent from both the prediction and the reference (a correct "
              "empty prediction). In the paired tests, ΔDice, per_case.csv's case score, the box plot and the "
              "gallery such a label scores Dice 1; a false positive on an empty label scores 0 (as in nnU-Net), so "
              "no case leaves a pair for a NaN. The Dice columns of the table are nnU-Net's summary.json, which "
              "skips these NaNs instead. (case, label) values counted as 1:", ""]
    lines += [f"- {r.name}: {r.dice_empty_correct} of {sum(len(v) for v in r.model.case_dice().values())}"
              for r in empty] + [""]
    teachers = _teachers_lines(rows)
    if teachers:
        lines += ["## Teachers", "",
                  "Per distilled row, the teachers that taught each fold (its fold_X/teachers.json); a trainer whose "
                  "folds were taught by different teacher sets has one row per set. Each teacher's foreground Dice on "
                  "the student's inner hold-out (measured before it taught; never on the validation cases) and its "
                  "weight in L_PWD and L_AFS.", ""] + teachers + [""]
    notes = [f"{r.name}: {n}" for r in rows for n in r.notes]
    notes += [f"{r.name}: HD95 undefined for {r.hd95_undefined} case-label(s) (empty prediction or reference), "
              f"left out of its mean" for r in rows if r.hd95_undefined]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    timed = sorted({(r.latency.fold, r.latency.case) for r in rows if r.latency})
    lines += ["## How the numbers are made", "",
              "- Dice: nnU-Net's summary.json per fold (per class: mean over cases, NaN cases skipped; foreground "
              "mean: mean of the class means); the table shows mean ± sd (sample sd) of the fold values, a fold "
              "whose value is NaN left out.",
              "- HD95: MONAI compute_hausdorff_distance(percentile=95) in mm per case and class; undefined (left out "
              "and counted) when the prediction or the reference is empty; per fold the mean over cases, then over "
              "classes; mean ± sd over folds.",
              "- Paired tests: case score = mean Dice over the foreground classes of the case, a class nnU-Net "
              "scores NaN (empty in prediction and reference) counting as 1; scipy.stats.ttest_rel and "
              "scipy.stats.wilcoxon (two-sided); Holm's step-down correction per test over the comparisons with "
              "the reference; Cohen's d_z = mean / sd of the differences; ΔDice CI: scipy.stats.bootstrap, "
              f"percentile method, {BOOTSTRAP_RESAMPLES} resamples of the cases, seed {BOOTSTRAP_SEED}.",
              "- Parameters and GFLOPs: the network rebuilt from the model's plans (deep supervision off); GFLOPs of "
              "one forward pass of one patch at the plans' patch size (torch.utils.flop_counter, 2 FLOPs per "
              "multiply-add).",
              ("- Time per case: nnU-Net's nnUNetPredictor with one fold's checkpoint_final.pth, on " + device +
               f", mirroring TTA {'on' if mirroring else 'off'}, preprocessing + sliding window + resampling of "
               "one raw case (" + ", ".join(f"{c} from fold {f}'s validation" for f, c in timed) + ")")
              if timing else "- Time per case: not measured (--no-timing).", ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{k}]({p.name})" for k, p in figures.items()] + [""]
    return "\n".join(lines)
