"""The cross-validated Teach-Former study as a list of ``nnUNetv2_train`` runs, and running it.

For every fold: the teachers that are not trained yet, the baseline student (the student's own
architecture trainer, no distillation) and the distilled student (``TeachFormerTrainer`` or the
variant for the chosen teachers/student). Each model is one ``nnUNetv2_train`` command, so results
land in nnU-Net's usual folders and ``--dry-run`` output can go straight to a cluster scheduler (one
fold per GPU is how nnU-Net users scale out). Running is idempotent and resumable: a model with
``checkpoint_final.pth`` is skipped, a model with an unfinished fold folder is resumed with ``--c``.
"""
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_teachformer.errors import TeachFormerError

from nnunet_teachformer import roster


@dataclass
class ModelRun:
    role: str  # "teacher", "baseline" or "distilled"
    trainer: str
    fold: int
    command: List[str]
    folder: Path
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return (self.folder / "checkpoint_final.pth").is_file()

    @property
    def started(self) -> bool:
        return any(self.folder.glob("checkpoint_*.pth"))

    def shell(self) -> str:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (prefix + " " if prefix else "") + " ".join(shlex.quote(c) for c in self.command)


def check_folds(dataset_name: str, folds: Sequence[int]) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    splits_file = Path(os.environ.get("nnUNet_preprocessed", ""), dataset_name, "splits_final.json")
    n_folds = len(load_json(str(splits_file))) if splits_file.is_file() else 5
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        where = splits_file if splits_file.is_file() else "nnU-Net's default five-fold split"
        raise TeachFormerError(f"fold(s) {bad} do not exist: {where} has folds 0..{n_folds - 1}.")


def distilled_trainer(student: str, teachers: Sequence[str], suffix: str = "") -> Tuple[str, Dict[str, str]]:
    """The distilled student's trainer name and any environment it needs for the chosen teachers.

    The roster's teacher sets have their own trainers (the paper's three, the single-teacher ablations, the
    three with nnU-Net's U-Net); any other set goes through TEACHFORMER_TEACHERS and shares the default
    trainer's result folder.
    """
    base = roster.STUDENTS[student][1]
    variant = roster.TEACHER_SET_VARIANTS.get(frozenset(teachers))
    if variant == "" or (variant is not None and base == "TeachFormerTrainer"):
        return base + variant + suffix, {}
    return base + suffix, {"TEACHFORMER_TEACHERS": ",".join(roster.teacher_trainers(teachers, suffix))}


def plan_study(dataset_id, folds: Sequence[int], teachers: Sequence[str], student: str, plans: str = "TeachFormerPlans",
               configuration: str = "3d_fullres", device: str = "cuda", preset: str = "full",
               nnunet_baseline: bool = False) -> List[ModelRun]:
    from nnunet_teachformer.planners.plan import check_preprocessed, resolve_dataset
    dataset_id, dataset_name = resolve_dataset(dataset_id, need_raw=False)
    check_preprocessed(dataset_id, plans, configuration)
    check_folds(dataset_name, folds)
    suffix = roster.PRESETS[preset]
    models = [("teacher", roster.TEACHERS[t] + suffix, {}) for t in teachers]
    if nnunet_baseline and "unet" not in teachers:
        models.append(("baseline", roster.NNUNET_BASELINE + suffix, {}))
    models += [("baseline", roster.STUDENTS[student][0] + suffix, {}),
               ("distilled", *distilled_trainer(student, teachers, suffix))]
    results = Path(os.environ.get("nnUNet_results", ""), dataset_name)
    runs = []
    for fold in folds:
        for role, trainer, env in models:
            folder = results / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
            command = ["nnUNetv2_train", str(dataset_id), configuration, str(fold), "-p", plans,
                       "-tr", trainer, "-device", device]
            runs.append(ModelRun(role, trainer, fold, command, folder, env))
    return runs


def run_study(runs: Sequence[ModelRun], log=print) -> None:
    """Runs the unfinished models in order; an unfinished fold folder is resumed with --c."""
    todo = [r for r in runs if not r.finished]
    for r in runs:
        if r.finished:
            log(f"[done]    {r.trainer} fold {r.fold}: {r.folder / 'checkpoint_final.pth'} exists, skipped")
    start = time.time()
    for i, r in enumerate(todo, 1):
        command = r.command + (["--c"] if r.started else [])
        log(f"[{i}/{len(todo)}] {r.role} {r.trainer} fold {r.fold}{' (resuming)' if r.started else ''}: "
            f"{' '.join(command)}   (elapsed {time.time() - start:.0f} s)")
        executable = Path(sys.executable).parent / command[0]
        env = dict(os.environ, **r.env)
        code = subprocess.call([str(executable) if executable.exists() else command[0]] + command[1:], env=env)
        if code != 0:
            raise TeachFormerError(f"{r.trainer} fold {r.fold} failed (exit code {code}); its log is in {r.folder}. "
                                   f"Fix the cause and run the same teachformer train command again: finished "
                                   f"models are kept and this one resumes.")
    log(f"Study complete: {len(runs)} models ({len(todo)} trained now) in {time.time() - start:.0f} s.")


def predict(input_folder: str, output_folder: str, dataset_id, folds: Sequence[int], trainer: str = "TeachFormerTrainer",
            plans: str = "TeachFormerPlans", configuration: str = "3d_fullres", device: str = "cuda",
            save_probabilities: bool = False, checkpoint: str = "checkpoint_final.pth", tta: bool = True,
            processes: Optional[int] = None) -> List[str]:
    """Runs ``nnUNetv2_predict`` for ``trainer``'s ensemble of ``folds`` after checking the checkpoints exist;
    ``processes`` sets its pre- and post-processing workers (-npp/-nps; nnU-Net's default is 3 each)."""
    from nnunet_teachformer.planners.plan import resolve_dataset
    dataset_id, dataset_name = resolve_dataset(dataset_id, need_raw=False)
    model = Path(os.environ.get("nnUNet_results", ""), dataset_name, f"{trainer}__{plans}__{configuration}")
    missing = [str(model / f"fold_{f}" / checkpoint) for f in folds if not (model / f"fold_{f}" / checkpoint).is_file()]
    if missing:
        raise TeachFormerError(f"missing checkpoint(s): {', '.join(missing)}. Train them with `teachformer train -d "
                               f"{dataset_id} -f {' '.join(map(str, folds))}` (or pick other folds with -f).")
    if not Path(input_folder).is_dir():
        raise TeachFormerError(f"input folder {input_folder} does not exist; it must hold images named "
                               f"CASE_0000{'.nii.gz'} ... like imagesTs.")
    command = ["nnUNetv2_predict", "-i", str(input_folder), "-o", str(output_folder), "-d", str(dataset_id),
               "-c", configuration, "-p", plans, "-tr", trainer, "-f", *map(str, folds), "-chk", checkpoint,
               "-device", device]
    command += (["--save_probabilities"] if save_probabilities else []) + ([] if tta else ["--disable_tta"])
    command += ["-npp", str(processes), "-nps", str(processes)] if processes else []
    executable = Path(sys.executable).parent / command[0]
    code = subprocess.call([str(executable) if executable.exists() else command[0]] + command[1:])
    if code != 0:
        raise TeachFormerError(f"nnUNetv2_predict failed (exit code {code}); see its output above.")
    return command
