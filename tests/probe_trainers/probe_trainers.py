"""Trainers that exist only for the tests, found by nnU-Net through ``nnUNet_extTrainer`` (see conftest's
``probe_env``) so that the real ``nnUNetv2_train`` runs them."""
import copy

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import \
    nnUNetTrainerNoMirroring

from nnunet_teachformer.trainers import (HDenseFormerLightTrainer_tiny, TeachFormerTrainer_tiny, UNetTrainer_tiny,
                                        UNETRTrainer_tiny)


class EarlyStopProbeTrainer(UNETRTrainer_tiny):
    """Stops early at a known epoch: the pseudo Dice is scripted to peak at epoch 1."""
    epochs = 8
    iterations_per_epoch = 1
    val_iterations_per_epoch = 1
    early_stopping_patience = 2
    scripted_dice = (0.5, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)

    def on_validation_epoch_end(self, val_outputs):
        epoch, dice = self.current_epoch, self.scripted_dice[self.current_epoch]
        self.logger.log("mean_fg_dice", dice, epoch)  # nnU-Net's logger derives the EMA from it
        self.logger.log("dice_per_class_or_region", [dice, dice], epoch)
        self.logger.log("val_losses", float(np.mean([o["loss"] for o in val_outputs])), epoch)


class SeededSelectionProbeTrainer(HDenseFormerLightTrainer_tiny):
    """A reproducible tiny run (``seed``, the package's seeding; run it with nnUNet_n_proc_DA=0) whose early
    stopping is likely to fire: two runs on the same training and selection data must agree to the bit."""
    epochs = 4
    iterations_per_epoch = 2
    val_iterations_per_epoch = 2
    early_stopping_patience = 1
    seed = 0


class StockProbeTrainer(nnUNetTrainerNoMirroring):
    """A stock nnU-Net trainer variant on a tiny schedule, as a user's existing model: no provenance record, any
    plans (no mirroring, so its final validation and predictions are quick)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2




class GoodTeacherProbeTrainer(UNetTrainer_tiny):
    """A teacher that segments the phantom after a few iterations: nnU-Net's U-Net (tiny widths) on 32^3 patches
    (it teaches on the student's 64^3 patch: a U-Net takes any multiple of its strides), Adam, and nnU-Net's Dice +
    cross-entropy loss with the lesions' cross-entropy weighted up (they are ~0.4 % of the voxels; unweighted, the
    network predicts only background for its first tens of iterations). Seeded (run with nnUNet_n_proc_DA=0)."""
    epochs = 1
    iterations_per_epoch = 10
    val_iterations_per_epoch = 1
    patch = [32, 32, 32]
    lesion_weight = 30.0
    adam_lr = 1e-2
    seed = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans = copy.deepcopy(plans)
        plans["configurations"][configuration]["patch_size"] = self.patch
        super().__init__(plans, configuration, fold, dataset_json, device)

    def _build_loss(self):
        loss = super()._build_loss()
        heads = self.label_manager.num_segmentation_heads
        loss.loss.ce.weight = torch.tensor([1.0] + [self.lesion_weight] * (heads - 1), device=self.device)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.adam_lr)
        return optimizer, PolyLRScheduler(optimizer, self.adam_lr, self.num_epochs)


class BrokenTeacherProbeTrainer(GoodTeacherProbeTrainer):
    """The same teacher with a learning rate of 0: it keeps its (seeded) initial weights and learns nothing."""
    iterations_per_epoch = 1
    adam_lr = 0.0



class EqualStudentProbeTrainer(TeachFormerTrainer_tiny):
    """A distilled student that trains one iteration: its start, where it measures its teachers, is what counts."""
    epochs = 1
    iterations_per_epoch = 1
    val_iterations_per_epoch = 1
