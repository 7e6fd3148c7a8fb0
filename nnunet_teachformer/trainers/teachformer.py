"""``TeachFormerTrainer``: the light student trained by nnU-Net while frozen teachers of the same fold
look at the same augmented batch (Hossain et al., Scientific Reports 2025).

    loss = L_SEG + afs_weight * L_AFS + pwd_weight * L_PWD

L_SEG is the student's focal + Dice loss (with its deep supervision), L_AFS the attention-map
similarity at the ``afs_taps`` averaged over teachers, L_PWD the pixel-wise KL divergence from the
teachers' combined probabilities on the full-resolution output. Every weight and choice is a class
attribute; the ablations of the paper are subclasses (see ``teachformer_variants``).

Teachers: ``teacher_trainers`` + ``teacher_variant`` (e.g. ``SwinUNETRTrainer`` + ``_tiny``) at
``teacher_checkpoint``, for the same dataset, plans, configuration and fold; the environment variable
``TEACHFORMER_TEACHERS`` overrides the set (format in ``distillation.teachers.parse_teacher_list``).
The options (``OPTIONS``) and the teachers' names are checked when the trainer is built; the teachers
themselves are loaded and checked (provenance, fold, data) when training starts (not for ``--val`` or
prediction), so the student's checkpoint is a plain nnU-Net checkpoint that ``nnUNetv2_predict -tr
TeachFormerTrainer`` loads alone. The teacher set is part of a run's identity: ``fold_X/teachers.json``
records it, and a fold that has checkpoints is never continued or restarted with another set.

Before training, each teacher's foreground Dice on the student's inner hold-out is measured
(``distillation.teacher_quality``) and recorded in ``teachers.json``; a teacher far below the best one
(``teacher_failure_ratio``) is a WARNING in the log, and ``teacher_weighting`` ("equal", "dice",
"drop_failed") sets each teacher's weight in L_PWD and L_AFS.

The teachers' forward passes cost most of a distillation step; ``teacher_precision`` (bf16 autocast also
on CPUs with AMX/AVX512-BF16, or fp32 on CUDA) and ``teacher_channels_last`` change only how they run.
``benchmarks/train_step.py`` measures what each gives.
"""
import contextlib
import io
import os
from pathlib import Path
from time import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context

from nnunet_teachformer import roster
from nnunet_teachformer.distillation.attention import attention_feature_similarity
from nnunet_teachformer.distillation.losses import COMBINATIONS, pixelwise_distillation, valid_mask
from nnunet_teachformer.distillation.teacher_quality import (WEIGHTINGS, failed_teachers, holdout_dice,
                                                             teacher_weights)
from nnunet_teachformer.distillation.teachers import (TEACHERS_ENV, StudentRun, Teacher, TeacherEnsemble, TeacherRef,
                                                      load_teachers, teacher_refs_from_environment)
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC
from nnunet_teachformer.networks.taps import TAP_NAMES, capture_taps
from nnunet_teachformer.distillation.provenance import PROVENANCE_DERIVED, TEACHERS_FILE, recorded_teachers
from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
from nnunet_teachformer.trainers.progress import DistillationProgressLogger

LOSS_TERMS = ("train_l_seg", "train_l_afs", "train_l_pwd")


def _number(minimum: float, strict: bool):
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (v > minimum if strict else
                                                                                      v >= minimum),
            f"a number {'>' if strict else '>='} {minimum}")


def _one_of(*values):
    return lambda v: v in values, "one of " + ", ".join(map(repr, values))


# every distillation option of TeachFormerTrainer: class attribute -> (check, what it must be)
OPTIONS = {
    "afs_weight": _number(0, strict=False),
    "afs_taps": (lambda v: isinstance(v, tuple) and len(v) > 0 and set(v) <= set(TAP_NAMES),
                 f"a non-empty tuple of {TAP_NAMES}"),
    "attention_power": _number(0, strict=True),
    "afs_normalisation": _one_of("l2", "l1"),
    "afs_distance": _one_of("l2", "l1"),
    "pwd_weight": _number(0, strict=False),
    "pwd_temperature": _number(0, strict=True),
    "pwd_combination": _one_of(*COMBINATIONS),
    "distillation_warmup": (lambda v: _number(0, strict=False)[0](v) and v <= 1, "a fraction of the epochs in [0, 1]"),
    "teacher_precision": _one_of("auto", "bf16", "fp32"),
    "teacher_channels_last": _one_of(True, False),
    "teacher_checkpoint": (lambda v: isinstance(v, str) and v.endswith(".pth"), "a checkpoint file name (*.pth)"),
    "teacher_weighting": _one_of(*WEIGHTINGS),
    "teacher_failure_ratio": (lambda v: _number(0, strict=True)[0](v) and v <= 1, "a number in (0, 1]"),
    "teacher_dice_max_cases": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                               "an integer >= 0 (0: not measured)"),
}


class TeachFormerTrainer(ArchitectureTrainer):
    network_spec = HDENSEFORMER_LIGHT_SPEC
    teacher_trainers = roster.teacher_trainers()  # the paper's three
    teacher_variant = ""
    teacher_checkpoint = "checkpoint_final.pth"
    afs_weight = 1.0
    afs_taps = ("coarse", "fine")
    attention_power = 2.0
    afs_normalisation = "l2"  # unit-norm maps: "l2" or "l1"
    afs_distance = "l2"  # squared L2 or L1 distance between the normalised maps
    pwd_weight = 1.0
    pwd_temperature = 3.0
    pwd_combination = "mean"  # "mean", "gt_confidence", "entropy" (of probabilities) or "logit_mean"
    # afs_weight and pwd_weight ramp linearly from 0 over this fraction of the epochs (0: the paper, from the start)
    distillation_warmup = 0.0
    # how the teachers run; their forward passes are most of a distillation step's cost (benchmarks/train_step.py)
    teacher_precision = "auto"  # "auto": as the student (bf16 autocast on CUDA, fp32 on CPU); "bf16"; "fp32"
    teacher_channels_last = False  # channels-last (NDHWC, 2D: NHWC) weights and inputs of the teachers
    # each teacher's Dice on the inner hold-out, measured at the start (distillation.teacher_quality)
    teacher_weighting = "equal"  # in L_PWD and L_AFS: "equal" (the paper), "dice" or "drop_failed"
    teacher_failure_ratio = 0.5  # a teacher below this fraction of the best teacher's Dice failed: a WARNING
    teacher_dice_max_cases = 10  # of the inner hold-out's cases (sorted), to keep the measurement affordable

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger.local_logger = DistillationProgressLogger(LOSS_TERMS)
        self.teachers = None  # TeacherEnsemble, set in on_train_start

    @classmethod
    def _check_before_start(cls, plans: dict, configuration: str, dataset_json: dict) -> None:
        super()._check_before_start(plans, configuration, dataset_json)
        problems = [f"{name} = {getattr(cls, name)!r} (must be {must})" for name, (ok, must) in OPTIONS.items()
                    if not ok(getattr(cls, name))]
        if cls.teacher_weighting != "equal" and (cls.early_stopping_patience is None or
                                                 not cls.teacher_dice_max_cases):
            problems.append(f"teacher_weighting = {cls.teacher_weighting!r} weights teachers by their Dice on the "
                            f"inner hold-out, which is not measured with " +
                            ("early_stopping_patience = None (no inner hold-out)" if cls.early_stopping_patience is None
                             else "teacher_dice_max_cases = 0") + " (use teacher_weighting = 'equal')")
        if not cls.afs_weight and not cls.pwd_weight:
            problems.append("afs_weight and pwd_weight are both 0: nothing is distilled (train the student's own "
                            "architecture trainer for a baseline)")
        if problems:
            raise TeachFormerError(f"{cls.__name__} has invalid distillation options: " + "; ".join(problems) + ".")
        cls._check_teacher_names(cls.teacher_refs())

    @classmethod
    def teacher_refs(cls) -> Tuple[TeacherRef, ...]:
        default = tuple(TeacherRef(t + cls.teacher_variant, cls.teacher_checkpoint) for t in cls.teacher_trainers)
        return teacher_refs_from_environment(default)

    @staticmethod
    def _check_teacher_names(refs: Sequence[TeacherRef]) -> None:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        unknown = []
        for ref in refs:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search
                    recursive_find_trainer_class_by_name(ref.trainer)
            except RuntimeError:
                unknown.append(ref.trainer)
        if unknown:
            source = f"{TEACHERS_ENV}={os.environ[TEACHERS_ENV]!r}" if os.environ.get(TEACHERS_ENV) \
                else "the trainer's teacher_trainers"
            raise TeachFormerError(
                f"{source} names {', '.join(unknown)}, which nnU-Net cannot find as a trainer. Teacher trainers of "
                f"this package: {', '.join(roster.TEACHERS.values())} (each also as _tiny, _demo, _5epochs); "
                f"check the spelling, or install the package that defines your trainer.")

    def on_train_start(self):
        splits_made_now = not isfile(self._splits_file())  # nnU-Net's do_split writes it for the teachers' check
        try:
            self._start_teachers()
        except TeachFormerError:
            self._remove_this_runs_files(splits_made_now)
            raise
        super().on_train_start()

    def _start_teachers(self):
        refs = self.teacher_refs()
        self._check_teacher_set(refs)
        run = StudentRun(
            dataset_name=self.plans_manager.dataset_name, plans=self.plans_manager.plans,
            configuration=self.configuration_name, fold=self.fold, dataset_json=self.dataset_json,
            validation_cases=tuple(self.case_roles()[2]), splits=self._load_splits(),
            dataset_fingerprint=self.dataset_fingerprint())
        teachers = load_teachers(refs, run, self.device)
        quality = self._teacher_quality(teachers)
        self.teachers = self.teacher_ensemble(teachers, [q["weight"] for q in quality])
        if self.local_rank == 0:  # which teachers taught this fold: the run's identity, and the report's record
            save_json([{**t.describe(), **q} for t, q in zip(teachers, quality)],
                      join(self.output_folder, TEACHERS_FILE))
        derived = [t.ref.trainer for t in teachers if t.provenance == PROVENANCE_DERIVED]
        if derived:
            self.print_to_log_file(f"Teachers trained without nnunet-teachformer: {', '.join(derived)}; what they "
                                   f"trained on is derived from nnU-Net's splits_final.json (fold {self.fold}), "
                                   f"recorded in {TEACHERS_FILE}, and marked in the report.")
        for t in teachers:
            if t.patch_size is not None:
                self.print_to_log_file(f"Teacher {t.ref.trainer} was trained on the patch {t.patch_size}; it runs on "
                                       f"this student's patch {list(self.configuration_manager.patch_size)}.")
        self.print_to_log_file(
            "Teach-Former distillation: teachers " + ", ".join(str(t.checkpoint_path) for t in teachers) +
            f" (precision {self.teacher_precision}, channels_last {self.teacher_channels_last})" +
            f"; loss = L_SEG + {self.afs_weight} * L_AFS(taps {list(self.teachers.taps)}, p={self.attention_power}, "
            f"{self.afs_normalisation}-normalised, {self.afs_distance} distance) + {self.pwd_weight} * "
            f"L_PWD(T={self.pwd_temperature}, {self.pwd_combination} of teachers)" +
            (f"; both weights ramp from 0 over the first {self.distillation_warmup:.0%} of the epochs"
             if self.distillation_warmup else ""))

    def _teacher_quality(self, teachers: Sequence[Teacher]) -> List[dict]:
        """Per teacher, its ``teachers.json`` keys: foreground Dice on the inner hold-out (never on the fold's
        validation cases), the cases, whether it failed and its weight; a failed teacher is a WARNING in the log."""
        selection = self.case_roles()[1]
        cases = selection[:self.teacher_dice_max_cases]
        started = time()
        if cases:
            dataset = self.dataset_class(self.preprocessed_dataset_folder, cases,
                                         folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
            measured = [holdout_dice(t.network, t.ref.trainer, dataset, cases, self.plans_manager,
                                     self.configuration_manager, self.dataset_json, self.device) for t in teachers]
            dice = [None if np.isnan(d) else d for d in measured]
            notes = [self._dice_note(t, d, cases) for t, d in zip(teachers, dice)]
        else:
            why = "not measured: " + ("teacher_dice_max_cases = 0" if selection else "no inner hold-out "
                                      "(early_stopping_patience = None), and the fold's validation cases never serve")
            dice, notes = [None] * len(teachers), [why] * len(teachers)
        failed = failed_teachers(dice, self.teacher_failure_ratio)
        weights, equal_because = teacher_weights(dice, failed, self.teacher_weighting)
        names = [t.ref.trainer for t in teachers]
        self.print_to_log_file(
            f"Teachers' foreground Dice on the inner hold-out ({len(cases)} of {len(selection)} cases"
            f"{': ' + ', '.join(cases) if cases else ''}; {time() - started:.0f} s): " +
            ", ".join(f"{n} {'n/a' if d is None else f'{d:.3f}'}" for n, d in zip(names, dice)) +
            f"; weights ({self.teacher_weighting}): " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights)) +
            ("" if cases else f" ({notes[0]})"))
        self._warn_failed(names, dice, failed, weights)
        if equal_because:
            self.print_to_log_file(f"WARNING: teacher_weighting {self.teacher_weighting!r} has nothing to go by "
                                   f"({equal_because}): the teachers are weighted equally.")
        return [{"inner_holdout_dice": d, "inner_holdout_cases": list(cases),
                 **({"inner_holdout_note": n} if n else {}), "failed": f, "weight": w}
                for d, n, f, w in zip(dice, notes, failed, weights)]

    def _warn_failed(self, names: Sequence[str], dice: Sequence[Optional[float]], failed: Sequence[bool],
                     weights: Sequence[float]) -> None:
        best_dice, best_name = max((d, n) for n, d in zip(names, dice) if d is not None) if any(failed) else (0, "")
        for name, d, weight in [(n, d, w) for n, d, f, w in zip(names, dice, failed, weights) if f]:
            self.print_to_log_file(
                f"WARNING: teacher {name} failed on the inner hold-out: foreground Dice {d:.3f}, " +
                (f"below {self.teacher_failure_ratio} x the best teacher's ({best_name}, {best_dice:.3f})" if best_dice
                 else "as every teacher's") + f". Its weight ({self.teacher_weighting}): {weight:.3f}" +
                ("; check or retrain it, or leave it out (teacher_weighting 'drop_failed', "
                 "TeachFormerTrainer_dropFailed)." if weight else ": left out."))

    @staticmethod
    def _dice_note(teacher: Teacher, dice: Optional[float], cases: Sequence[str]) -> Optional[str]:
        """What to know about a teacher's inner-hold-out Dice, if anything."""
        if dice is None:
            return "undefined: no foreground in any case's reference or prediction"
        seen = len(teacher.training_cases & set(cases))
        return f"optimistic: the teacher trained on {seen} of these cases ({teacher.provenance} provenance)" \
            if seen else None

    def _check_teacher_set(self, refs: Sequence[TeacherRef]) -> None:
        """A fold that has checkpoints keeps the teacher set it was started with."""
        folder = Path(self.output_folder)
        if not any(folder.glob("checkpoint_*.pth")):
            return
        requested = [(r.trainer, r.checkpoint) for r in refs]
        recorded = recorded_teachers(folder)
        if recorded == requested:
            return
        was = ("teachers " + ", ".join(f"{t}:{c}" for t, c in recorded)) if recorded is not None else \
            "teachers it did not record (an older nnunet-teachformer)"
        raise TeachFormerError(
            f"{folder} holds checkpoints of a run with {was}; this run asks for "
            f"{', '.join(f'{t}:{c}' for t, c in requested)}. One fold is never continued or restarted with another "
            f"teacher set, so that its results stay attributable. Continue with the original set, or remove "
            f"{folder} to start this fold again with the new one (or give the new set its own trainer variant).")

    def _remove_this_runs_files(self, splits_made_now: bool):
        """A refused start leaves nothing behind: this run's log, the split file if this run made it (nnU-Net makes
        the same again), and the folders nnU-Net created for it if empty."""
        if self.local_rank != 0:
            return
        for path in [self.log_file] + ([self._splits_file()] if splits_made_now else []):
            if isfile(path):
                os.remove(path)
        for folder in (self.output_folder, self.output_folder_base):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)

    def teacher_ensemble(self, teachers, weights: Optional[Sequence[float]] = None) -> TeacherEnsemble:
        """The teachers as this trainer runs them (benchmarks time single teachers through this too)."""
        return TeacherEnsemble(teachers, self.afs_taps if self.afs_weight else (), self.attention_power,
                               self.pwd_temperature, self.pwd_combination, need_probabilities=bool(self.pwd_weight),
                               channels_last=self.teacher_channels_last,
                               spatial_dims=len(self.configuration_manager.patch_size), weights=weights)

    def teacher_autocast(self):
        """The autocast context of the teachers' forward passes (``teacher_precision``)."""
        if self.teacher_precision == "auto":
            return self._autocast()
        if self.teacher_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return dummy_context()

    def _load_splits(self) -> List[dict]:
        return load_json(self._splits_file()) if isfile(self._splits_file()) else []

    def _splits_file(self) -> str:
        return join(self.preprocessed_dataset_folder_base, "splits_final.json")

    def _autocast(self):
        return torch.autocast(self.device.type) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        full_target = target[0] if isinstance(target, list) else target
        valid = valid_mask(full_target, self.label_manager.ignore_label)

        self.optimizer.zero_grad(set_to_none=True)
        with self.teacher_autocast():
            signals = self.teachers(data, full_target)
        with self._autocast():
            with capture_taps(self.network, self.teachers.taps) as features:
                output = self.network(data)
            l_seg = self.loss(output, target)
            zero = l_seg.new_zeros(())
            l_afs = torch.stack([
                attention_feature_similarity(features[tap], signals.maps[tap], self.attention_power,
                                             self.afs_normalisation, self.afs_distance, valid, signals.weights)
                for tap in self.teachers.taps]).mean() if self.teachers.taps else zero
            full_output = output[0] if isinstance(output, (list, tuple)) else output
            l_pwd = pixelwise_distillation(full_output, signals.probabilities, self.pwd_temperature, valid) \
                if signals.probabilities is not None else zero
            ramp = self.distillation_ramp()
            loss = l_seg + ramp * (self.afs_weight * l_afs + self.pwd_weight * l_pwd)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy(), "train_l_seg": l_seg.detach().cpu().numpy(),
                "train_l_afs": l_afs.detach().cpu().numpy(), "train_l_pwd": l_pwd.detach().cpu().numpy()}

    def distillation_ramp(self) -> float:
        """The factor on afs_weight and pwd_weight this epoch: 0 -> 1 over ``distillation_warmup`` of the epochs."""
        warmup_epochs = self.distillation_warmup * self.num_epochs
        return min(1.0, self.current_epoch / warmup_epochs) if warmup_epochs > 0 else 1.0

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key in LOSS_TERMS:
            self.logger.log(key, float(np.mean(outputs[key])), self.current_epoch)
        self.print_to_log_file("L_SEG", np.round(self.logger.get_value("train_l_seg", -1), 4),
                               "L_AFS", np.round(self.logger.get_value("train_l_afs", -1), 4),
                               "L_PWD", np.round(self.logger.get_value("train_l_pwd", -1), 4))
