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

This module computes (rows, reference, tests, figures) and writes the files; ``report_tables`` holds the rows
and how they are written as tables, CSV and report.md text.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation import gallery as gallery_module
from nnunet_teachformer.evaluation import plots
from nnunet_teachformer.evaluation.challenge import report_section
from nnunet_teachformer.evaluation.complexity import model_folder_complexity
from nnunet_teachformer.evaluation.latency import time_inference
from nnunet_teachformer.evaluation.metrics import CaseValues, hd95_per_case
from nnunet_teachformer.evaluation.report_tables import (ModelRow, fold_all_table, model_table, models_csv,
                                                         per_case_csv, report_markdown, tests_csv, write_csv)
from nnunet_teachformer.evaluation.results import (DISTILLED_PREFIX, ROLE_DISTILLED, ROLE_NNUNET, ROLE_STUDENT,
                                                   ROLE_TEACHER, ROLE_UNKNOWN, DatasetFolders, ModelResults,
                                                   dataset_folders, discover_models, missing_models)
from nnunet_teachformer.evaluation.statistics import PairedTest, case_scores, holm_corrected, paired_test
from nnunet_teachformer.nnunet_paths import Fold, check_writable

REPORT_FOLDER = "teachformer_report"
DEFAULT_REFERENCE = DISTILLED_PREFIX  # the paper's distilled student
DEFAULT_REFERENCE_PRESETS = ("_tiny", "_demo", "_5epochs")  # its short-schedule variants, used without the full one


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
    fold_all_table: Optional[str] = None  # models trained on fold all, apart: not cross-validated


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


# ------------------------------------------------------------------------------------------- the report
def build_report(dataset, folds: Sequence[Fold] = (0, 1, 2, 3, 4), output=None, reference: Optional[str] = None,
                 device: Optional[str] = None, timing: bool = True, mirroring: bool = True, gallery_cases: int = 3,
                 overwrite: bool = False, log=print) -> Report:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    with_fold_all = "all" in folds  # listed apart: fold all validates on its training cases
    folds = sorted(set(int(f) for f in folds if f != "all"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TeachFormerError("--device cuda, but PyTorch sees no CUDA device here; time on the CPU with --device "
                               "cpu, or skip the timing with --no-timing.")
    folders = dataset_folders(dataset)
    output = Path(output) if output else folders.results / REPORT_FOLDER
    check_writable(output, "Give -o a folder you can write." if output != folders.results / REPORT_FOLDER
                   else "Write the report to a folder you can write with -o, e.g. -o ~/teachformer_report.")
    _check_report_folder(output, overwrite)
    models = discover_models(folders, folds, log=log)
    dataset_json = load_json(str(models[0].folder / "dataset.json"))
    label_names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    labels = tuple(sorted(lb for lb in label_names if lb > 0 and lb != dataset_json["labels"].get("ignore")))

    order = [ROLE_TEACHER, ROLE_NNUNET, ROLE_STUDENT, ROLE_DISTILLED, ROLE_UNKNOWN]
    rows = [ModelRow(m, labels) for m in sorted(models, key=lambda m: (order.index(m.role), m.name))]
    reference_row, reference_rule = declared_reference(rows, reference)  # before any slow work or writing
    log(f"reference for the paired tests: {reference_rule}")
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

    files = {"models_csv": models_csv(output / "models.csv", rows, labels, label_names, folds),
             "paired_tests_csv": tests_csv(output / "paired_tests.csv", tests, folds),
             "per_case_csv": per_case_csv(output / "per_case.csv", rows, labels, label_names)}
    figures = _figures(output, folders, rows, labels, dataset_json, reference_row, gallery_cases, log)

    table = model_table(rows, label_names, labels, reference_row, tests_by_name)
    ending = dataset_json["file_ending"]
    challenge = report_section(dataset_json, {r.name: {c: fold.validation_folder / (c + ending) for fold in
                                                       r.model.folds.values() for c in fold.dice}
                                              for r in rows if r.model.complete}, folders.gt_segmentations,
                               reference_row.name if reference_row else None)
    if challenge is not None and challenge.rows:
        header = list(dict.fromkeys(k for r in challenge.rows for k in r))
        files["challenge_csv"] = write_csv(output / "challenge.csv", header,
                                           [[r.get(k, "") for k in header] for r in challenge.rows])
    fold_all = fold_all_table(models, label_names, labels) if with_fold_all else None
    markdown = report_markdown(folders, folds, rows, table, tests, reference_rule, missing, figures, device,
                               timing, mirroring, challenge.lines if challenge else [], fold_all)
    files["report_md"] = output / "report.md"
    files["report_md"].write_text(markdown)
    return Report(output, table, markdown, files, figures, rows, tests,
                  reference_row.name if reference_row else None, reference_rule, missing, fold_all)


def _check_report_folder(output: Path, overwrite: bool) -> None:
    """A report is written into a new or empty folder, or over an earlier report (its report.md or models.csv);
    a folder holding other files is the user's, used only with ``overwrite``."""
    if overwrite or not output.is_dir() or not any(output.iterdir()):
        return
    if (output / "report.md").is_file() or (output / "models.csv").is_file():
        return
    names = sorted(p.name for p in output.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise TeachFormerError(f"-o {output} holds files that are not an earlier teachformer report ({shown}); "
                           f"nothing was changed. Give a new or empty folder, or pass --overwrite to write the report "
                           f"into it anyway (files of the report's names are replaced).")


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
