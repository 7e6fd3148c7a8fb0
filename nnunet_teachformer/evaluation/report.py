"""``teachformer report``: the one table a distillation study is judged by, built from nnU-Net's result folders.

For every model of the dataset (teachers, students without distillation, distilled students, ablations,
nnU-Net baselines): cross-validated Dice per class and foreground mean (mean +- sd over folds, from
nnU-Net's ``summary.json``), HD95 (MONAI), parameters, GFLOPs at the plans' patch size, inference time
per case, and the paired comparison with the reference model (``statistics``): the mean per-case Dice
difference with its bootstrap CI, and t-test / Wilcoxon p-values Holm-corrected over the table.

The reference is declared, never chosen by the results: ``--reference``, else the distilled trainer
``TeachFormerTrainer``, else the one of ``TeachFormerTrainer_tiny`` / ``_demo`` / ``_5epochs`` present
(``default_reference``). A model that lacks a requested fold is listed with the missing folds and the
command that produces them; its Dice is not averaged over the folds it has. A distilled student whose folds
were taught by different teacher sets is one row per set; one taught by a teacher without a provenance
record is marked. Output (default ``$nnUNet_results/<Dataset>/teachformer_report``):

    report.md          the table, the paired tests, effect sizes per fold, missing folds/models, teachers, rules
    models.csv         one row per model (fractions, not percent; per-fold Dice columns)
    paired_tests.csv   reference vs every other model (raw and Holm p, effect size pooled and per fold)
    challenge.csv      HECKTOR 2021 / PI-CAI 2022 datasets: the challenge's own figures per model (``challenge``)
    per_case.csv       Dice and HD95 per model and validation case
    *.png              trade-off scatters, per-case box plot, loss curves, case gallery
    cache/             HD95 per fold, reused while the predictions are unchanged
"""
import csv
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation import gallery as gallery_module
from nnunet_teachformer.evaluation import plots
from nnunet_teachformer.evaluation.challenge import report_section
from nnunet_teachformer.evaluation.complexity import Complexity, model_folder_complexity
from nnunet_teachformer.evaluation.latency import Latency, time_inference
from nnunet_teachformer.evaluation.metrics import CaseValues, case_score, count_undefined, hd95_per_case
from nnunet_teachformer.evaluation.results import (DISTILLED_PREFIX, ROLE_DISTILLED, ROLE_NNUNET, ROLE_STUDENT,
                                                   ROLE_TEACHER, ROLE_UNKNOWN, DatasetFolders, ModelResults,
                                                   dataset_folders, discover_models, missing_models,
                                                   teacher_set_label)
from nnunet_teachformer.evaluation.statistics import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EffectSize, PairedTest,
                                                      case_scores, holm_corrected, mean_sd, paired_test)

REPORT_FOLDER = "teachformer_report"
SIGNIFICANCE = 0.05
DEFAULT_REFERENCE = DISTILLED_PREFIX  # the paper's distilled student
DEFAULT_REFERENCE_PRESETS = ("_tiny", "_demo", "_5epochs")  # its short-schedule variants, used without the full one
UNVERIFIED_MARK = "†"  # taught by a teacher without a provenance record


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
        return self.name + (f" {UNVERIFIED_MARK}" if self.model.teacher_warnings else "")


@dataclass
class Report:
    folder: Path
    table_markdown: str
    markdown: str
    files: Dict[str, Path]
    figures: Dict[str, Path]
    rows: List[ModelRow]
    tests: List[PairedTest]
    reference: Optional[str]
    reference_rule: str  # how the reference was declared, or why there is none
    missing: List[str]  # missing folds (with the command that makes them) and missing models


# ------------------------------------------------------------------------------------------- computing
def _fingerprint(files: Sequence[Path]) -> list:
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] if f.is_file() else [str(f), None, None]
            for f in sorted(files)]


def _fold_hd95(folders: DatasetFolders, model: ModelResults, fold: int, labels, cache: Path, log) -> CaseValues:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    result = model.folds[fold]
    file_ending = load_json(str(model.folder / "dataset.json"))["file_ending"]
    cases = sorted(result.dice)
    files = [result.validation_folder / (c + file_ending) for c in cases]
    fingerprint = _fingerprint(files + [folders.gt_segmentations / (c + file_ending) for c in cases])
    cache_file = cache / model.folder.name / f"fold_{fold}_hd95.json"
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached["fingerprint"] == fingerprint:
            return {c: {int(k): v for k, v in per_label.items()} for c, per_label in cached["hd95"].items()}
    log(f"HD95 (MONAI) of {model.name} fold {fold}: {len(cases)} cases")
    reader = PlansManager(load_json(str(model.folder / "plans.json"))).image_reader_writer_class()
    values = hd95_per_case(result.validation_folder, folders.gt_segmentations, cases, labels, reader, file_ending)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"fingerprint": fingerprint, "hd95": values}))
    return values


def _timing_target(folders: DatasetFolders, row: ModelRow) -> Optional[Tuple[int, str, list]]:
    """(fold, case, image files) to time: the lowest available fold's first validation case."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    dataset_json = load_json(str(row.model.folder / "dataset.json"))
    for fold, result in sorted(row.model.folds.items()):
        if not (result.folder / "checkpoint_final.pth").is_file():
            continue
        case = sorted(result.dice)[0]
        files = gallery_module.case_files(folders.raw / "imagesTr", case, dataset_json)
        if all(f.is_file() for f in files):
            return fold, case, files
        row.notes.append(f"timing skipped: raw images of {case} not found in {folders.raw / 'imagesTr'}")
        return None
    row.notes.append("timing skipped: no fold with checkpoint_final.pth")
    return None


def _matching_rows(rows: Sequence[ModelRow], name: str) -> List[ModelRow]:
    """Rows named ``name``: the exact row name (e.g. a teacher-set row), else the trainer or folder name."""
    exact = [r for r in rows if r.name == name]
    return exact or [r for r in rows if name in (r.model.trainer, r.model.folder.name)]


def default_reference(rows: Sequence[ModelRow]) -> Optional[str]:
    """The trainer name the paired tests compare against when no --reference is given: ``TeachFormerTrainer``
    if the dataset has that model, else the one ``TeachFormerTrainer_<preset>`` (tiny, demo, 5epochs) it has,
    else None. Two presets without the full trainer are ambiguous: the user must declare one."""
    trainers = {r.model.trainer for r in rows}
    if DEFAULT_REFERENCE in trainers:
        return DEFAULT_REFERENCE
    presets = sorted(DEFAULT_REFERENCE + p for p in DEFAULT_REFERENCE_PRESETS if DEFAULT_REFERENCE + p in trainers)
    if len(presets) > 1:
        raise TeachFormerError(f"No default reference for the paired tests: the dataset has {' and '.join(presets)} "
                               f"but no {DEFAULT_REFERENCE}. Declare the reference with --reference TRAINER.")
    return presets[0] if presets else None


def declared_reference(rows: Sequence[ModelRow], requested: Optional[str]) -> Tuple[Optional[ModelRow], str]:
    """(reference row, how it was declared). A --reference that names no model, several models, or a model
    without any requested fold is an error; so is a default whose folds were taught by different teacher
    sets. A default trainer that is absent or has no results gives no reference (and says so)."""
    name = requested or default_reference(rows)
    how = f"declared with --reference {requested}" if requested else \
        f"the declared default ({DEFAULT_REFERENCE}, else its _tiny/_demo/_5epochs preset)"
    if name is None:
        return None, (f"none: no {DEFAULT_REFERENCE} (or _tiny/_demo/_5epochs preset) model in this dataset, so no "
                      f"paired tests; declare a reference with --reference TRAINER")
    matches = _matching_rows(rows, name)
    if not matches:
        raise TeachFormerError(f"--reference {name} is not a model of this dataset; models: "
                               f"{', '.join(r.name for r in rows)}.")
    if len(matches) > 1:
        raise TeachFormerError(f"The reference {name} ({how}) matches several rows: "
                               f"{'; '.join(r.name + ' = ' + r.model.folder.name for r in matches)}. Declare one "
                               f"with --reference, giving the row name in quotes or the full folder name.")
    row = matches[0]
    if not row.model.folds:
        if not requested:
            return None, (f"none: the declared default {name} has none of the requested folds "
                          f"({'; '.join(row.model.missing.values())}), so no paired tests")
        raise TeachFormerError(f"--reference {requested}: {row.model.folder} has none of the requested folds "
                               f"({'; '.join(row.model.missing.values())}).")
    return row, f"{row.name}, {how}"


def _training_logs(model: ModelResults, log) -> Dict[int, Dict[str, list]]:
    logs = {}
    for fold, result in sorted(model.folds.items()):
        checkpoint = result.folder / "checkpoint_final.pth"
        if checkpoint.is_file():
            logging = torch.load(checkpoint, map_location="cpu", weights_only=False).get("logging", {})
            if all(k in logging for k, _ in plots.LOSS_CURVES):
                logs[fold] = {k: [float(v) for v in logging[k]] for k, _ in plots.LOSS_CURVES}
    if not logs:
        log(f"{model.name}: no L_SEG/L_AFS/L_PWD in its checkpoints, no loss-curve plot")
    return logs


# ------------------------------------------------------------------------------------------- formatting
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


def _model_table(rows: Sequence[ModelRow], label_names: Dict[int, str], labels, reference: Optional[ModelRow],
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
    return lines


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    def cell(v):
        return "" if isinstance(v, float) and np.isnan(v) else v
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[cell(v) for v in r] for r in rows])
    return path


def _models_csv(path: Path, rows: Sequence[ModelRow], labels, label_names, folds: Sequence[int]) -> Path:
    names = [label_names.get(lb, str(lb)) for lb in labels]
    header = ["model", "trainer", "plans", "configuration", "role", "folds_requested", "folds_available",
              "folds_missing", "complete"]
    header += [f"dice_{n}{s}" for n in names for s in ("", "_sd")] + ["dice_fg", "dice_fg_sd"]
    header += [f"dice_fg_fold{f}" for f in folds]
    header += ["dice_empty_correct"]
    header += [f"hd95_{n}" for n in names] + ["hd95_fg", "hd95_fg_sd", "hd95_undefined"]
    header += ["parameters", "gflops", "flop_device", "patch_size", "seconds_per_case", "timing_device",
               "timing_fold", "timing_case", "tta_mirroring", "teachers", "teacher_warnings", "notes"]
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
                   "; ".join(m.teacher_warnings), "; ".join(row.notes)]
        table.append(values)
    return _write_csv(path, header, table)


def _tests_csv(path: Path, tests: Sequence[PairedTest], folds: Sequence[int]) -> Path:
    header = ["reference", "other", "n", "unpaired", "mean_reference", "mean_other", "mean_difference", "ci_low",
              "ci_high", "t_statistic", "t_p", "t_p_holm", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm",
              "cohens_dz", "note"]
    fold_header = [f"{k}_fold{f}" for f in folds for k in ("n", "mean_difference", "ci_low", "ci_high")]
    nan = EffectSize(0, math.nan, math.nan, math.nan)
    rows = [[getattr(t, h) for h in header] +
            [v for f in folds for v in dataclasses.astuple(t.per_fold.get(f, nan))] for t in tests]
    return _write_csv(path, header + fold_header, rows)


def _per_case_csv(path: Path, rows: Sequence[ModelRow], labels, label_names) -> Path:
    names = [label_names.get(lb, str(lb)) for lb in labels]
    header = ["model", "fold", "case"] + [f"dice_{n}" for n in names] + ["case_score"] + [f"hd95_{n}" for n in names]
    table = []
    for row in rows:
        for fold, result in sorted(row.model.folds.items()):
            for case, dice in sorted(result.dice.items()):
                hd = row.hd95.get(fold, {}).get(case, {})
                table.append([row.name, fold, case] + [dice.get(lb, float("nan")) for lb in labels] +
                             [case_score(dice)] + [hd.get(lb, float("nan")) for lb in labels])
    return _write_csv(path, header, table)


# ------------------------------------------------------------------------------------------- the report
def build_report(dataset, folds: Sequence[int] = (0, 1, 2, 3, 4), output=None, reference: Optional[str] = None,
                 device: Optional[str] = None, timing: bool = True, mirroring: bool = True, gallery_cases: int = 3,
                 log=print) -> Report:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    folds = sorted(set(int(f) for f in folds))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TeachFormerError("--device cuda, but PyTorch sees no CUDA device here; time on the CPU with --device "
                               "cpu, or skip the timing with --no-timing.")
    folders = dataset_folders(dataset)
    models = discover_models(folders, folds, log=log)
    dataset_json = load_json(str(models[0].folder / "dataset.json"))
    label_names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    labels = tuple(sorted(lb for lb in label_names if lb > 0 and lb != dataset_json["labels"].get("ignore")))

    order = [ROLE_TEACHER, ROLE_NNUNET, ROLE_STUDENT, ROLE_DISTILLED, ROLE_UNKNOWN]
    rows = [ModelRow(m, labels) for m in sorted(models, key=lambda m: (order.index(m.role), m.name))]
    reference_row, reference_rule = declared_reference(rows, reference)  # before any slow work or writing
    log(f"reference for the paired tests: {reference_rule}")
    output = Path(output) if output else folders.results / REPORT_FOLDER
    output.mkdir(parents=True, exist_ok=True)
    for row in rows:
        m = row.model
        for fold in m.folds:
            row.hd95[fold] = _fold_hd95(folders, m, fold, labels, output / "cache", log)
        if m.trainer_class is None:
            row.notes.append(f"trainer class {m.trainer} not found (nnUNet_extTrainer): no parameters/GFLOPs/timing")
            continue
        try:
            row.complexity = model_folder_complexity(m.folder, m.trainer_class, m.configuration, device)
        except Exception as e:  # noqa: BLE001 - one unbuildable network must not cost the whole report
            row.notes.append(f"parameters/GFLOPs unavailable: {type(e).__name__}: {e}")
        if timing and m.folds:
            target = _timing_target(folders, row)
            if target:
                fold, case, files = target
                log(f"timing {m.name}: fold {fold} checkpoint, case {case}, {device}, TTA "
                    f"{'on' if mirroring else 'off'}")
                try:
                    row.latency = time_inference(m.folder, fold, files, case, device, mirroring)
                except Exception as e:  # noqa: BLE001
                    row.notes.append(f"timing failed: {type(e).__name__}: {e}")

    tests = []
    if reference_row is not None:
        case_folds = {c: f for f, result in reference_row.model.folds.items() for c in result.dice}
        tests = holm_corrected([paired_test(reference_row.name, reference_row.model.case_dice(), r.name,
                                            r.model.case_dice(), case_folds)
                                for r in rows if r is not reference_row and r.model.folds])
    tests_by_name = {t.other: t for t in tests}
    missing = [f"{r.name} fold {fold}: {why}" for r in rows for fold, why in sorted(r.model.missing.items())]
    missing += [f"model {m}" for m in missing_models(models)]

    files = {"models_csv": _models_csv(output / "models.csv", rows, labels, label_names, folds),
             "paired_tests_csv": _tests_csv(output / "paired_tests.csv", tests, folds),
             "per_case_csv": _per_case_csv(output / "per_case.csv", rows, labels, label_names)}
    figures = _figures(output, folders, rows, labels, dataset_json, reference_row, gallery_cases, log)

    table = _model_table(rows, label_names, labels, reference_row, tests_by_name)
    ending = dataset_json["file_ending"]
    challenge = report_section(dataset_json, {r.name: {c: fold.validation_folder / (c + ending) for fold in
                                                       r.model.folds.values() for c in fold.dice}
                                              for r in rows if r.model.complete}, folders.gt_segmentations,
                               reference_row.name if reference_row else None)
    if challenge is not None and challenge.rows:
        header = list(dict.fromkeys(k for r in challenge.rows for k in r))
        files["challenge_csv"] = _write_csv(output / "challenge.csv", header,
                                            [[r.get(k, "") for k in header] for r in challenge.rows])
    markdown = _report_markdown(folders, folds, rows, table, tests, reference_rule, missing, figures, device,
                                timing, mirroring, challenge.lines if challenge else [])
    files["report_md"] = output / "report.md"
    files["report_md"].write_text(markdown)
    return Report(output, table, markdown, files, figures, rows, tests,
                  reference_row.name if reference_row else None, reference_rule, missing)


def _figures(output: Path, folders: DatasetFolders, rows: Sequence[ModelRow], labels, dataset_json: dict,
             reference: Optional[ModelRow], gallery_cases: int, log) -> Dict[str, Path]:
    figures = {}
    plotted = [r for r in rows if r.model.complete and r.complexity]
    not_shown = [r.name for r in rows if r not in plotted]
    title = f"{folders.name}: Dice vs cost ({len(plotted)} models)"
    figures["dice_vs_parameters"] = plots.tradeoff_plot(
        [plots.TradeoffPoint(r.name, r.model.role, r.complexity.parameters / 1e6, *r.dice("fg")) for r in plotted],
        "parameters (millions, log scale)", title, output / "dice_vs_parameters.png", not_shown)
    figures["dice_vs_gflops"] = plots.tradeoff_plot(
        [plots.TradeoffPoint(r.name, r.model.role, r.complexity.gflops, *r.dice("fg")) for r in plotted],
        "GFLOPs per patch (log scale)", title, output / "dice_vs_gflops.png", not_shown)

    with_cases = [r for r in rows if r.model.folds]
    if with_cases:
        scores = {r.name: list(case_scores(r.model.case_dice()).values()) for r in with_cases}
        tick = {r.name: r.name if r.model.complete else f"{r.name}\n(missing folds "
                f"{', '.join(map(str, sorted(r.model.missing)))})" for r in with_cases}
        figures["case_dice_boxplot"] = plots.case_dice_boxplot(
            scores, {r.name: r.model.role for r in with_cases}, tick,
            f"{folders.name}: Dice per validation case", output / "case_dice_boxplot.png")

    for r in rows:
        if r.model.role == ROLE_DISTILLED and r.model.folds:
            logs = _training_logs(r.model, log)
            if logs:
                figures[f"training_curves_{r.name}"] = plots.training_curves(
                    r.name, logs, output / f"training_curves_{_file_name(r.name)}.png")

    if reference is not None and gallery_cases > 0:
        figures.update(_gallery(output, folders, rows, dataset_json, reference, gallery_cases, log))
    return figures


def _file_name(name: str) -> str:
    """A row name (which may hold spaces, brackets, '+') as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _gallery(output, folders, rows, dataset_json, reference, count, log) -> Dict[str, Path]:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ending = dataset_json["file_ending"]
    cases = gallery_module.pick_cases(case_scores(reference.model.case_dice()), count)
    images = {c: gallery_module.case_files(folders.raw / "imagesTr", c, dataset_json) for c in cases}
    lacking = [str(f) for c in cases for f in images[c] + [folders.gt_segmentations / (c + ending)]
               if not f.is_file()]
    if lacking:
        log(f"gallery skipped: {len(lacking)} input file(s) missing, e.g. {lacking[0]}")
        return {}
    shown = [r for r in rows if r.model.folds]
    predictions = {r.name: {c: fold.validation_folder / (c + ending) for fold in r.model.folds.values()
                            for c in fold.dice} for r in shown}
    scores = {r.name: case_scores(r.model.case_dice()) for r in shown}
    reader = PlansManager(load_json(str(reference.model.folder / "plans.json"))).image_reader_writer_class()
    path = gallery_module.gallery(
        cases, images, {c: folders.gt_segmentations / (c + ending) for c in cases}, predictions, scores,
        dataset_json, reader, output / "gallery.png",
        f"{folders.name}: best, median and worst validation cases of {reference.name}")
    return {"gallery": path}


def _report_markdown(folders, folds, rows, table, tests, reference_rule, missing, figures, device, timing,
                     mirroring, challenge_lines) -> str:
    lines = [f"# Teach-Former report: {folders.name}", "",
             f"Folds requested: {', '.join(map(str, folds))}. Reference for the paired tests: **{reference_rule}**. "
             f"Dice in %, mean ± sd over folds (nnU-Net's validation summary.json). ΔDice = reference − other, mean "
             f"per-case Dice difference over all validation cases of the folds, in percentage points, with its "
             f"95 % bootstrap CI. p: Holm-corrected over the comparisons of this table (one family per test), "
             f"* corrected p < {SIGNIFICANCE}.", ""]
    if any(r.model.teacher_warnings for r in rows):
        lines += [f"{UNVERIFIED_MARK} taught (in at least one fold) by a teacher without a provenance record, or "
                  f"with no record of its teachers: nothing shows that its teachers never trained on this "
                  f"student's validation cases, so its numbers may be optimistic (see Teachers).", ""]
    lines += [table, ""] + challenge_lines
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
                  "folds were taught by different teacher sets has one row per set.", ""] + teachers + [""]
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
