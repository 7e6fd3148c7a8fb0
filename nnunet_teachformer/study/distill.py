"""``teachformer distill``: from the nnU-Net models a user already has to distilled students, in one command.

The teachers are the user's trained models as they are (``nnUNetTrainer`` and its variants, ResEnc presets,
this package's trainers): ``--from`` names their trainers, their plans are found in the results tree (or
given with ``-p``), and the student trains on the same plans, configuration and folds, fold ``all``
included (the model to deploy). For each fold only what is missing is trained, through the real
``nnUNetv2_train`` (``study.run.run_study``: finished folds are skipped, started ones resume with ``--c``): the
distilled student and, with ``--baseline``, the same student without distillation. Nothing is written into
a teacher's folder; a student fold that was distilled from another teacher set is never continued or
counted as done. Then the report sets the students beside their teachers, and the predict command is
printed.
"""
from typing import List, Optional, Sequence, Tuple

from nnunet_teachformer import roster
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.distillation.provenance import recorded_teachers
from nnunet_teachformer.nnunet_paths import (check_folds, model_folder, resolve_dataset, results_folder, sort_folds,
                                             train_command, trained_folds)
from nnunet_teachformer.study.run import ModelRun


def find_plans(dataset_name: str, teachers: Sequence[str], configuration: str) -> str:
    """The plans the teachers were trained with: the one ``<Teacher>__<Plans>__<Configuration>`` that all of
    them have in the results tree."""
    root = results_folder(dataset_name)
    found = [{p.name.split("__")[1] for p in root.glob(f"{t}__*__{configuration}") if p.is_dir()} for t in teachers]
    common = sorted(set.intersection(*found)) if found else []
    if len(common) == 1:
        return common[0]
    names = ", ".join(teachers)
    if not common:
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.count("__") == 2) if root.is_dir() else []
        raise TeachFormerError(f"no model of {names} for {configuration} in {root} (model folders there: "
                               f"{', '.join(have) or 'none'}). Name the trainer(s) of your models with --from, and "
                               f"the configuration with -c.")
    raise TeachFormerError(f"{names} are trained with several plans in {root} ({', '.join(common)}); choose one "
                           f"with -p.")


def _trained_folds(dataset_name: str, teachers: Sequence[str], plans: str, configuration: str,
                   checkpoint: str) -> List:
    """The folds every teacher has ``checkpoint`` for."""
    common = set.intersection(*(set(trained_folds(model_folder(dataset_name, t, plans, configuration), checkpoint))
                                for t in teachers))
    return sort_folds(int(f) if f.isdigit() else f for f in common)


def plan_distillation(dataset, teachers: Sequence[str], folds: Optional[Sequence] = None,
                      plans: Optional[str] = None, configuration: str = "3d_fullres",
                      checkpoint: str = "checkpoint_final.pth", student: str = "hdenseformer_light",
                      preset: str = "full", baseline: bool = False, device: str = "cuda") -> Tuple[List[ModelRun], str]:
    """The ``nnUNetv2_train`` runs that distil ``student`` from the trained ``teachers`` on ``folds`` (default:
    every fold all teachers have ``checkpoint`` for), and the plans they train with (the teachers'). Refuses,
    before anything runs, a missing teacher fold and a student fold that another teacher set has started."""
    from nnunet_teachformer.planners.plan import check_preprocessed

    dataset_id, dataset_name = resolve_dataset(dataset, need_raw=False)
    plans = plans or find_plans(dataset_name, teachers, configuration)
    check_preprocessed(dataset_id, plans, configuration)
    trained = _trained_folds(dataset_name, teachers, plans, configuration, checkpoint)
    if folds is None:
        if not trained:
            raise TeachFormerError(f"{', '.join(teachers)} ({plans}, {configuration}) have no fold with {checkpoint} "
                                   f"in common; train your model first, e.g. "
                                   f"{' '.join(train_command(dataset_id, configuration, 0, plans, teachers[0]))}")
        folds = trained
    folds = sort_folds(folds)
    check_folds(dataset_name, folds)
    missing = [(t, f) for t in teachers for f in folds
               if not (model_folder(dataset_name, t, plans, configuration, f) / checkpoint).is_file()]
    if missing:
        lines = [f"- {model_folder(dataset_name, t, plans, configuration, f) / checkpoint}: train it with "
                 f"{' '.join(train_command(dataset_id, configuration, f, plans, t))}" for t, f in missing]
        pick = f" or distil only the folds your models have: -f {' '.join(map(str, trained))}" if trained else ""
        raise TeachFormerError("missing teacher checkpoint(s):\n" + "\n".join(lines) + f"\nTrain them{pick}.")

    suffix = roster.PRESETS[preset]
    baseline_trainer, distilled_trainer = (t + suffix for t in roster.STUDENTS[student])
    teacher_env = {"TEACHFORMER_TEACHERS": ",".join(f"{t}:{checkpoint}" for t in teachers)}
    wanted = [(t, f"{checkpoint}") for t in teachers]
    models = ([("baseline", baseline_trainer, {})] if baseline else []) + [("distilled", distilled_trainer,
                                                                           teacher_env)]
    runs, clashes = [], []
    for fold in folds:
        for role, trainer, env in models:
            run = ModelRun(role, trainer, fold, train_command(dataset_id, configuration, fold, plans, trainer,
                                                              "-device", device, "--npz"),
                           model_folder(dataset_name, trainer, plans, configuration, fold), env)
            recorded = recorded_teachers(run.folder) if role == "distilled" and run.started else None
            if recorded is not None and recorded != wanted:
                clashes.append(f"- {run.folder} was distilled from {', '.join(f'{t}:{c}' for t, c in recorded)}")
            runs.append(run)
    if clashes:
        raise TeachFormerError(
            f"{distilled_trainer} already holds folds taught by another teacher set:\n" + "\n".join(clashes) +
            f"\nThis run asks for {', '.join(f'{t}:{c}' for t, c in wanted)}. Nothing was changed: move those fold "
            f"folders away (or distil into another student with --student) to distil them again.")
    return runs, plans


def predict_command(dataset_id, runs: Sequence[ModelRun], plans: str, configuration: str) -> str:
    """The ``teachformer predict`` line for the distilled student: fold ``all`` if it is trained, else its folds."""
    distilled = [r for r in runs if r.role == "distilled" and r.finished]
    folds = ["all"] if any(r.fold == "all" for r in distilled) else [r.fold for r in distilled]
    trainer = distilled[0].trainer if distilled else "TeachFormerTrainer"
    return (f"teachformer predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {dataset_id} -tr {trainer} -p {plans} "
            f"-c {configuration} -f {' '.join(map(str, folds))}")

