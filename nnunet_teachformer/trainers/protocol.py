"""``StudyProtocol``: what every trainer of a Teach-Former study does on top of nnU-Net, whatever its network.

A mix-in placed before ``nnUNetTrainer`` (``class X(StudyProtocol, nnUNetTrainer)``); our architecture
trainers and nnU-Net's own U-Nets (``nnunet_unets``) share it, so teachers, baselines and students are
trained and selected under one protocol:

* schedule as class attributes (``epochs``, ``iterations_per_epoch``, ``val_iterations_per_epoch``,
  ``validation_mirroring``: whether nnU-Net's final validation averages over mirrored inputs), so variants
  are two-line subclasses;
* ``seed``: None (nnU-Net's way: unseeded) or a number that seeds Python's, NumPy's and PyTorch's generators
  when the trainer is built, so the initial weights and, with ``nnUNet_n_proc_DA=0`` (augmentation in the
  training process), every batch are reproducible: repeated runs of one setting differ only by their seed
  (``benchmarks/distillation_budget.py`` trains each setting under several);
* a patch every network takes on plans our planner did not make (``patch_adaptation``), said in the log;
* no training on missing, incomplete or stale data: a configuration that was never preprocessed, an interrupted
  preprocessing, or preprocessed data whose raw cases changed since ``teachformer plan`` recorded them is refused
  before anything is written, with the command that completes it (``planners.plan.check_preprocessed``);
* model selection without the fold's validation cases: with early stopping (``early_stopping_patience``,
  the paper's 40 epochs) an inner hold-out drawn from the fold's *training* cases (seeded by the fold,
  ``inner_holdout_fraction`` of them, at least ``inner_holdout_min_cases``) gives the EMA pseudo-Dice that
  stops training and picks ``checkpoint_best.pth``; ``checkpoint_final.pth`` then holds those best weights.
  The fold's validation cases are touched only by nnU-Net's final validation, so cross-validated Dice
  is unbiased, also for students whose teachers were selected this way. The stop counter is derived
  from the logged EMA history, which the checkpoint carries: ``--c`` resumes it exactly, and ``--c``
  after an early stop trains no further. With ``early_stopping_patience = None`` the split and the
  selection are nnU-Net's own (``checkpoint_best.pth`` is then chosen on the fold's validation cases, so a
  cross-validated student refuses it as a teacher);
* provenance: ``fold_X/provenance.json`` (``nnunet_teachformer.distillation.provenance``), rewritten with every
  checkpoint, records the cases the model learnt from and chose its weights with, and the fingerprint
  of its input data; distilled students check their teachers against it.
"""
import random
from typing import List, Optional, Tuple

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.taps import unwrap_network
from nnunet_teachformer.planners.plan import check_preprocessed
from nnunet_teachformer.distillation.provenance import input_fingerprint, write_record
from nnunet_teachformer.trainers.patch_adaptation import adapt_plans


class _EarlyStop(Exception):
    pass


class StudyProtocol:
    epochs = 1000
    iterations_per_epoch = 250
    val_iterations_per_epoch = 50
    validation_mirroring = True  # False: the final validation without mirroring TTA (the checkpoint keeps its axes)
    early_stopping_patience: Optional[int] = 40
    inner_holdout_fraction = 0.2  # of the fold's training cases, for early stopping and best-weight selection
    inner_holdout_min_cases = 2
    seed: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self._seed_generators()
        plans, self.patch_adaptation = adapt_plans(plans, configuration)
        plans_manager = PlansManager(plans)
        if configuration in plans_manager.available_configurations:  # nnU-Net itself reports unknown ones
            # complete and current, before nnU-Net creates the model folder: a configuration never preprocessed,
            # an interrupted preprocessing or raw data changed since all stop here with the command that fixes them
            check_preprocessed(plans_manager.dataset_name, plans_manager.plans_name, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch

    @classmethod
    def _seed_generators(cls) -> None:
        if cls.seed is None:
            return
        if isinstance(cls.seed, bool) or not isinstance(cls.seed, int) or not 0 <= cls.seed < 2 ** 32:
            raise TeachFormerError(f"{cls.__name__}.seed = {cls.seed!r}: it must be None (unseeded) or a whole "
                                   f"number from 0 to 2**32 - 1 (NumPy's range).")
        random.seed(cls.seed)
        np.random.seed(cls.seed)
        torch.manual_seed(cls.seed)

    def case_roles(self) -> Tuple[List[str], List[str], List[str]]:
        """(training, selection, validation) cases of this fold: the network learns from the training cases,
        early stopping and the best weights are chosen on the selection cases (the inner hold-out; none
        without early stopping), and only nnU-Net's final validation sees the validation cases."""
        if getattr(self, "_case_roles", None) is None:
            training, validation = self.do_split()
            training, selection = sorted(training), []
            if self.early_stopping_patience is not None:
                training, selection = self._inner_holdout(training)
            self._case_roles = (training, selection, sorted(validation))
        return self._case_roles

    def _inner_holdout(self, cases: List[str]) -> Tuple[List[str], List[str]]:
        n = max(self.inner_holdout_min_cases, int(round(self.inner_holdout_fraction * len(cases))))
        if len(cases) - n < 1:
            raise TeachFormerError(
                f"{type(self).__name__} fold {self.fold}: {len(cases)} training case(s) are too few to hold out {n} "
                f"for early stopping and still train. Add cases, or subclass with early_stopping_patience = None "
                f"(nnU-Net's fixed schedule, no selection).")
        seed = 12345 + (self.fold if isinstance(self.fold, int) else 5)
        held_out = set(np.random.RandomState(seed).choice(cases, n, replace=False).tolist())
        return [c for c in cases if c not in held_out], sorted(held_out)

    def get_tr_and_val_datasets(self):
        """nnU-Net's validation during training (pseudo-Dice) runs on the selection cases, never on the fold's
        validation cases (unless early stopping is off: then it is nnU-Net's own)."""
        training, selection, validation = self.case_roles()
        monitored = selection if self.early_stopping_patience is not None else validation
        return tuple(self.dataset_class(self.preprocessed_dataset_folder, keys,
                                        folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
                     for keys in (training, monitored))

    def dataset_fingerprint(self) -> dict:
        return load_json(join(self.preprocessed_dataset_folder_base, "dataset_fingerprint.json"))

    def input_fingerprint(self) -> str:
        return input_fingerprint(self.plans_manager.plans, self.configuration_name, self.dataset_json,
                                 self.dataset_fingerprint())

    def provenance_record(self) -> dict:
        training, selection, validation = self.case_roles()
        return {"trainer": type(self).__name__, "dataset": self.plans_manager.dataset_name,
                "plans": self.plans_manager.plans_name, "configuration": self.configuration_name, "fold": self.fold,
                "epoch": self.current_epoch, "training_cases": training, "selection_cases": selection,
                "validation_cases": validation, "input_fingerprint": self.input_fingerprint()}

    def on_train_start(self):
        super().on_train_start()
        if self.patch_adaptation:
            self.print_to_log_file(self.patch_adaptation)
        training, selection, _ = self.case_roles()
        if selection:
            self.print_to_log_file(f"Model selection (early stopping, best weights) on an inner hold-out of "
                                   f"{len(selection)} training cases: {', '.join(selection)}; training on "
                                   f"{len(training)}. The fold's validation cases are used only for the final "
                                   f"validation.")
        if self.local_rank == 0:
            write_record(self.output_folder, self.provenance_record())

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing:
            write_record(self.output_folder, self.provenance_record())

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation; without mirroring test-time augmentation if ``validation_mirroring`` is
        off. Only the validation changes: the checkpoint (saved before) keeps the mirroring axes, so
        ``nnUNetv2_predict`` still mirrors by default."""
        if self.validation_mirroring:
            return super().perform_actual_validation(save_probabilities)
        axes, self.inference_allowed_mirroring_axes = self.inference_allowed_mirroring_axes, None
        self.print_to_log_file("Final validation without mirroring test-time augmentation (validation_mirroring "
                               "is off for this schedule).")
        try:
            return super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes

    # early stopping -------------------------------------------------------------------------------
    def epochs_without_improvement(self) -> int:
        """Epochs since the best EMA pseudo-Dice (0 if the last epoch was the best)."""
        ema = self.logger.get_value("ema_fg_dice", step=None)
        if not ema:
            return 0
        return len(ema) - 1 - int(np.nanargmax(ema)) if not np.all(np.isnan(ema)) else len(ema)

    def on_epoch_end(self):
        super().on_epoch_end()
        patience = self.early_stopping_patience
        if patience is not None and self.current_epoch < self.num_epochs and \
                self.epochs_without_improvement() >= patience:
            self.print_to_log_file(f"Early stopping: no better EMA pseudo Dice for {patience} epochs "
                                   f"(best {np.round(self._best_ema, 4)}); finishing with the best weights.")
            raise _EarlyStop()

    def stopped_early(self) -> bool:
        """Whether the loaded state already met the stop criterion (``--c`` after an early stop)."""
        patience = self.early_stopping_patience
        return patience is not None and 0 < self.current_epoch < self.num_epochs and \
            self.epochs_without_improvement() >= patience

    def run_training(self):
        if self.stopped_early():
            self.print_to_log_file(f"This fold stopped early at epoch {self.current_epoch - 1} (no better EMA pseudo "
                                   f"Dice for {self.early_stopping_patience} epochs); nothing more to train.")
            if not isfile(join(self.output_folder, "checkpoint_final.pth")):  # killed between the stop and the save
                self._finish_with_best_weights()
            return
        try:
            super().run_training()
        except _EarlyStop:
            self._finish_with_best_weights()

    def _finish_with_best_weights(self):
        best = join(self.output_folder, "checkpoint_best.pth")
        if isfile(best):
            weights = torch.load(best, map_location=self.device, weights_only=False)["network_weights"]
            unwrap_network(self.network).load_state_dict(weights)
        self.on_train_end()
