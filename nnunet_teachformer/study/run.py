"""The cross-validated Teach-Former study as a list of ``nnUNetv2_train`` runs, and running it.

For every fold: the teachers that are not trained yet, the baseline student (the student's own
architecture trainer, no distillation) and the distilled student (``TeachFormerTrainer`` or the
variant for the chosen teachers/student). Each model is one ``nnUNetv2_train --npz`` command, so results
land in nnU-Net's usual folders and ``--dry-run`` output can go straight to a cluster scheduler (one
fold per GPU is how nnU-Net users scale out). Running is idempotent and resumable: a model with
``checkpoint_final.pth`` is skipped, a model with an unfinished fold folder is resumed with ``--c``.
Predicting with the trained models is ``inference.predict``.
"""
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from nnunet_teachformer import roster
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import Fold, check_folds, model_folder, resolve_dataset, train_command


@dataclass
class ModelRun:
    role: str  # "teacher", "baseline" or "distilled"
    trainer: str
    fold: Fold
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


def plan_study(dataset_id, folds: Sequence[Fold], teachers: Sequence[str], student: str, plans: str = "TeachFormerPlans",
               configuration: str = "3d_fullres", device: str = "cuda", preset: str = "full",
               nnunet_baseline: bool = False) -> List[ModelRun]:
    from nnunet_teachformer.planners.plan import check_preprocessed
    dataset_id, dataset_name = resolve_dataset(dataset_id, need_raw=False)
    check_preprocessed(dataset_id, plans, configuration)
    check_folds(dataset_name, folds)
    suffix = roster.PRESETS[preset]
    models = [("teacher", roster.TEACHERS[t] + suffix, {}) for t in teachers]
    if nnunet_baseline and "unet" not in teachers:
        models.append(("baseline", roster.NNUNET_BASELINE + suffix, {}))
    models += [("baseline", roster.STUDENTS[student][0] + suffix, {}),
               ("distilled", *distilled_trainer(student, teachers, suffix))]
    runs = []
    for fold in folds:
        for role, trainer, env in models:
            # --npz keeps the validation probabilities that nnUNetv2_find_best_configuration ensembles
            runs.append(ModelRun(role, trainer, fold, train_command(dataset_id, configuration, fold, plans, trainer,
                                                                    "-device", device, "--npz"),
                                 model_folder(dataset_name, trainer, plans, configuration, fold), env))
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
