"""Finding a dataset's trained models in nnU-Net's result folders and reading their validation per fold.

A model is one ``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>`` folder. For each
requested fold it has either nnU-Net's ``fold_X/validation/summary.json`` (computed here with nnU-Net's
own ``compute_metrics_on_folder`` when the predictions are complete but the summary is missing) or a
reason why the fold is missing. A model's role comes from its trainer class: a ``TeachFormerTrainer``
subclass is a distilled student, an ``ArchitectureTrainer`` subclass a teacher or a student trained
without distillation (its network spec says which), anything else an nnU-Net baseline.

A distilled student's ``fold_X/teachers.json`` records the teachers that taught that fold and whether
each had a provenance record (``"provenance": "recorded"``; ``"derived from nnU-Net's split"`` for a model
trained without this package, whose cases follow ``splits_final.json``; ``"unrecorded"`` in records of older
versions; absent in records written before it existed: "unknown"), and, since teachers are measured before
they teach, each teacher's foreground Dice on the student's inner hold-out, whether it failed there (far below
the best teacher) and its weight in the distillation.
Folds of one trainer taught by different teacher sets are not one model: ``split_by_teacher_set`` makes
one result per set, each with only its own folds.
"""
import contextlib
import dataclasses
import io
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.metrics import CaseValues, dice_per_case, evaluated_labels
from nnunet_teachformer.distillation.provenance import PROVENANCE_DERIVED, PROVENANCE_RECORDED
from nnunet_teachformer.nnunet_paths import dataset_id, model_identifier, resolve_dataset, train_command

ROLE_TEACHER = "teacher"
ROLE_STUDENT = "student (no distillation)"
ROLE_DISTILLED = "student (distilled)"
ROLE_NNUNET = "nnU-Net baseline"
ROLE_UNKNOWN = "unknown trainer"
DISTILLED_PREFIX = "TeachFormerTrainer"


@dataclass(frozen=True)
class DatasetFolders:
    name: str
    raw: Path
    preprocessed: Path
    results: Path

    @property
    def dataset_id(self) -> int:
        return dataset_id(self.name)

    @property
    def gt_segmentations(self) -> Path:
        return self.preprocessed / "gt_segmentations"


def dataset_folders(dataset) -> DatasetFolders:
    """The dataset's folders; nnUNet_raw is optional (without it the report has no timing and no gallery)."""
    _, name = resolve_dataset(dataset, need_raw=False)
    if not os.environ.get("nnUNet_results"):
        raise TeachFormerError("nnUNet_results not set: the report reads nnU-Net's result folders; export it as "
                               "for training, e.g. export nnUNet_results=/data/nnUNet_results.")
    raw = os.environ.get("nnUNet_raw") or "nnUNet_raw-not-set"
    return DatasetFolders(name, Path(raw, name), Path(os.environ["nnUNet_preprocessed"], name),
                          Path(os.environ["nnUNet_results"], name))


@lru_cache(maxsize=None)
def find_trainer_class(trainer: str) -> Optional[type]:
    """The trainer class by name as nnU-Net finds it (built-in or via nnUNet_extTrainer), None if unknown."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    with contextlib.redirect_stdout(io.StringIO()):  # the lookup narrates every folder it searches
        try:
            return recursive_find_trainer_class_by_name(trainer)
        except (RuntimeError, AssertionError):
            return None


def role_of(trainer_class: Optional[type]) -> str:
    from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
    from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer
    if trainer_class is None:
        return ROLE_UNKNOWN
    if issubclass(trainer_class, TeachFormerTrainer):
        return ROLE_DISTILLED
    if issubclass(trainer_class, ArchitectureTrainer):
        return ROLE_TEACHER if trainer_class.network_spec.role == "teacher" else ROLE_STUDENT
    return ROLE_NNUNET


@dataclass
class FoldResult:
    fold: int
    folder: Path
    summary: dict  # nnU-Net's load_summary_json(): integer label keys
    dice: CaseValues  # per case, per foreground label
    evaluated_now: bool = False  # summary.json was missing and computed by the report

    @property
    def validation_folder(self) -> Path:
        return self.folder / "validation"


PROVENANCE_UNKNOWN = "unknown"  # teachers.json written before the provenance key existed


@dataclass(frozen=True)
class TeacherRecord:
    trainer: str
    checkpoint: str
    provenance: str  # "recorded", "derived from nnU-Net's split", "unrecorded" (older versions) or "unknown"
    inner_holdout_dice: Optional[float] = None  # None: not measured (no inner hold-out, or an older record)
    failed: bool = False  # far below the best teacher's Dice on the inner hold-out
    weight: Optional[float] = None  # in L_PWD and L_AFS; None in older records (equal)


@dataclass
class ModelResults:
    trainer: str
    plans: str
    configuration: str
    folder: Path
    role: str
    trainer_class: Optional[type]
    folds: Dict[int, FoldResult] = field(default_factory=dict)
    missing: Dict[int, str] = field(default_factory=dict)  # fold -> why it is missing
    name: str = ""
    # distilled students: per available fold, the teachers of its teachers.json (None: the fold has none)
    teachers: Dict[int, Optional[Tuple[TeacherRecord, ...]]] = field(default_factory=dict)

    @property
    def teacher_warnings(self) -> List[str]:
        """Per fold, what is not certain about its teachers: no record at all, or a teacher whose
        provenance is not recorded."""
        warnings = []
        for fold, records in sorted(self.teachers.items()):
            if records is None:
                warnings.append(f"fold {fold}: no {_teachers_file()} (teachers not recorded)")
                continue
            warnings += [f"fold {fold}: teacher {t.trainer} ({t.checkpoint}): " +
                         ("provenance unknown (teachers.json written before provenance was recorded)"
                          if t.provenance == PROVENANCE_UNKNOWN else
                          "provenance derived from nnU-Net's split (trained without nnunet-teachformer: its cases are "
                          "those of splits_final.json's fold, its checkpoint_final the last epoch)"
                          if t.provenance == PROVENANCE_DERIVED else
                          f"provenance {t.provenance} (no record of how and on which cases it was trained)")
                         for t in records if t.provenance != PROVENANCE_RECORDED]
        return warnings

    @property
    def failed_teachers(self) -> List[str]:
        """Per fold, each teacher that failed on the student's inner hold-out, with its Dice, the best one's and
        its weight."""
        lines = []
        for fold, records in sorted(self.teachers.items()):
            measured = [t for t in records or () if t.inner_holdout_dice is not None]
            best = max(measured, key=lambda t: t.inner_holdout_dice, default=None)
            lines += [f"fold {fold}: teacher {t.trainer} failed on the inner hold-out (Dice "
                      f"{t.inner_holdout_dice:.3f}; best {best.trainer} {best.inner_holdout_dice:.3f}" +
                      ("" if t.weight is None else f"; weight {t.weight:.3f}") + ")"
                      for t in records or () if t.failed and best is not None]
        return lines

    @property
    def complete(self) -> bool:
        return bool(self.folds) and not self.missing

    def case_dice(self) -> CaseValues:
        """Per-case Dice over all available folds (each case is validated in exactly one fold)."""
        return {case: values for fold in self.folds.values() for case, values in fold.dice.items()}


def _train_command(folders: DatasetFolders, model: "ModelResults", fold: int, val_only: bool = False) -> str:
    return " ".join(train_command(folders.dataset_id, model.configuration, fold, model.plans, model.trainer,
                                  *(["--val"] if val_only else [])))


def _expected_validation_cases(folders: DatasetFolders, fold: int) -> Optional[List[str]]:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    splits = folders.preprocessed / "splits_final.json"
    if not splits.is_file():
        return None
    splits = load_json(str(splits))
    return sorted(splits[fold]["val"]) if fold < len(splits) else None


def _evaluate_validation(folders: DatasetFolders, model: ModelResults, fold_folder: Path) -> None:
    """Writes ``validation/summary.json`` exactly as nnU-Net's ``perform_actual_validation`` does."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(load_json(str(model.folder / "plans.json")))
    dataset_json = load_json(str(model.folder / "dataset.json"))
    label_manager = plans_manager.get_label_manager(dataset_json)
    if not folders.gt_segmentations.is_dir():
        raise TeachFormerError(f"{folders.gt_segmentations} is missing, so {fold_folder / 'validation'} cannot be "
                               f"evaluated. Preprocess the dataset again (nnUNetv2_plan_and_preprocess -d "
                               f"{folders.dataset_id}) or restore the folder.")
    compute_metrics_on_folder(str(folders.gt_segmentations), str(fold_folder / "validation"),
                              str(fold_folder / "validation" / "summary.json"),
                              plans_manager.image_reader_writer_class(), dataset_json["file_ending"],
                              evaluated_labels(label_manager), label_manager.ignore_label, chill=True,
                              num_processes=default_num_processes)


def _read_fold(folders: DatasetFolders, model: ModelResults, fold: int, file_ending: str, log) -> None:
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    fold_folder = model.folder / f"fold_{fold}"
    summary_file = fold_folder / "validation" / "summary.json"
    evaluated_now = False
    if not summary_file.is_file():
        if not fold_folder.is_dir():
            model.missing[fold] = f"not trained (no {fold_folder.name}); train: {_train_command(folders, model, fold)}"
            return
        if not (fold_folder / "checkpoint_final.pth").is_file():
            model.missing[fold] = (f"training not finished (no checkpoint_final.pth); resume: "
                                   f"{_train_command(folders, model, fold)} --c")
            return
        predicted = sorted(p.name[:-len(file_ending)] for p in (fold_folder / "validation").glob("*" + file_ending))
        expected = _expected_validation_cases(folders, fold)
        if not predicted or (expected is not None and set(expected) - set(predicted)):
            done = f"{len(predicted)} of {len(expected)}" if expected is not None else "no"
            model.missing[fold] = (f"validation incomplete ({done} cases predicted); run: "
                                   f"{_train_command(folders, model, fold, val_only=True)}")
            return
        log(f"{model.folder.name}/fold_{fold}: validation/summary.json missing, evaluating the "
            f"{len(predicted)} predictions with nnU-Net's compute_metrics_on_folder")
        _evaluate_validation(folders, model, fold_folder)
        evaluated_now = True
    summary = load_summary_json(str(summary_file))
    model.folds[fold] = FoldResult(fold, fold_folder, summary, dice_per_case(summary, file_ending), evaluated_now)
    if model.role == ROLE_DISTILLED:
        model.teachers[fold] = fold_teachers(fold_folder)


def _teachers_file() -> str:
    from nnunet_teachformer.trainers.teachformer import TEACHERS_FILE
    return TEACHERS_FILE


def fold_teachers(fold_folder: Path) -> Optional[Tuple[TeacherRecord, ...]]:
    """The teachers recorded in ``fold_folder/teachers.json``; None if the fold has no such file."""
    record = fold_folder / _teachers_file()
    if not record.is_file():
        return None
    try:
        entries = json.loads(record.read_text())
        return tuple(TeacherRecord(e["trainer"], str(e.get("checkpoint", "")), e.get("provenance", PROVENANCE_UNKNOWN),
                                   e.get("inner_holdout_dice"), bool(e.get("failed", False)), e.get("weight"))
                     for e in entries)
    except (ValueError, KeyError, TypeError) as e:
        raise TeachFormerError(f"{record} is not a teachers record (a JSON list of {{\"trainer\", \"checkpoint\", "
                               f"\"provenance\"}} objects): {type(e).__name__}: {e}. Restore it, or delete it and "
                               f"the report will list the fold as taught by unrecorded teachers.") from e


def teacher_set_label(records: Optional[Tuple[TeacherRecord, ...]]) -> str:
    return "+".join(sorted({t.trainer for t in records})) if records is not None else "teachers not recorded"


def split_by_teacher_set(model: ModelResults) -> List[ModelResults]:
    """The model as it is, or, when its folds were taught by different teacher sets, one model per set named
    ``<name> [<Teacher>+<Teacher>]``, holding only the folds of that set; the requested folds taught by
    another set are missing from it (so it is incomplete and never averaged over another set's folds)."""
    groups: Dict[str, List[int]] = {}
    for fold, records in sorted(model.teachers.items()):
        groups.setdefault(teacher_set_label(records), []).append(fold)
    if len(groups) < 2:
        return [model]
    names = {label: f"{model.name} [{label}]" for label in groups}
    parts = []
    for label, folds in groups.items():
        part = dataclasses.replace(model, name=names[label], folds={f: model.folds[f] for f in folds},
                                   teachers={f: model.teachers[f] for f in folds}, missing=dict(model.missing))
        for other, other_folds in groups.items():
            if other != label:
                part.missing.update({f: f"taught by another teacher set (row {names[other]})" for f in other_folds})
        parts.append(part)
    return parts


def _display_names(models: List[ModelResults]) -> None:
    """The trainer name, plus the plans and/or configuration in parentheses where the models differ in them."""
    vary_plans = len({m.plans for m in models}) > 1
    vary_configuration = len({m.configuration for m in models}) > 1
    for m in models:
        extra = [v for v, varies in ((m.plans, vary_plans), (m.configuration, vary_configuration)) if varies]
        m.name = m.trainer + (f" ({', '.join(extra)})" if extra else "")


def discover_models(folders: DatasetFolders, requested_folds: Sequence[int], log=print) -> List[ModelResults]:
    """Every ``<Trainer>__<Plans>__<Configuration>`` folder of the dataset with its requested folds read."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    if not folders.results.is_dir():
        raise TeachFormerError(f"{folders.results} does not exist: no model of {folders.name} has been trained. "
                               f"Train with `teachformer train -d {folders.dataset_id}` (or nnUNetv2_train).")
    models = []
    for folder in sorted(p for p in folders.results.iterdir() if p.is_dir()):
        parts = folder.name.split("__")
        if len(parts) != 3 or not (folder / "dataset.json").is_file():
            continue  # the report's own folder, nnU-Net's ensembles and other non-model folders
        trainer_class = find_trainer_class(parts[0])
        model = ModelResults(parts[0], parts[1], parts[2], folder, role_of(trainer_class), trainer_class)
        file_ending = load_json(str(folder / "dataset.json"))["file_ending"]
        for fold in requested_folds:
            _read_fold(folders, model, fold, file_ending, log)
        models.append(model)
    if not models:
        raise TeachFormerError(f"{folders.results} holds no nnU-Net model folders (<Trainer>__<Plans>__<Configuration> "
                               f"with dataset.json). Train with `teachformer train -d {folders.dataset_id}`.")
    _display_names(models)
    return [part for m in models for part in split_by_teacher_set(m)]


def teachers_used(model: ModelResults) -> List[str]:
    """The teacher trainers of a distilled student, as its folds recorded them (in fold order, no repeats);
    the trainer class's default set for a model trained before the record existed."""
    recorded = [t.trainer for record in sorted(model.folder.glob(f"fold_*/{_teachers_file()}"))
                for t in fold_teachers(record.parent)]
    cls = model.trainer_class
    return list(dict.fromkeys(recorded)) or [t + cls.teacher_variant for t in cls.teacher_trainers]


def missing_models(models: Sequence[ModelResults]) -> List[str]:
    """Models a distilled student is compared with that have no result folder: its teachers (those recorded
    in its folds' ``teachers.json``, else the trainer's default set) and its baseline student (the
    architecture trainer with the same network, preset and schedule)."""
    import nnunet_teachformer.trainers as trainers
    from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
    from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer

    def same_student(a, b):
        return all(getattr(a, k) == getattr(b, k) for k in ("network_spec", "network_preset", "epochs",
                                                             "iterations_per_epoch"))

    present = {(m.trainer, m.plans, m.configuration) for m in models}
    messages = []
    for m in models:
        if m.role != ROLE_DISTILLED:
            continue
        cls = m.trainer_class
        expected = [(t, "teacher") for t in teachers_used(m)]
        expected += [(name, "student without distillation") for name, c in vars(trainers).items()
                     if isinstance(c, type) and issubclass(c, ArchitectureTrainer)
                     and not issubclass(c, TeachFormerTrainer) and same_student(c, cls)]
        for trainer, what in expected:
            if (trainer, m.plans, m.configuration) not in present:
                message = f"{model_identifier(trainer, m.plans, m.configuration)} ({what} of {m.trainer}): no result folder"
                if message not in messages:
                    messages.append(message)
    return messages
