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
They are loaded and checked when training starts (not for ``--val`` or prediction), so the student's
checkpoint is a plain nnU-Net checkpoint that ``nnUNetv2_predict -tr TeachFormerTrainer`` loads alone.

The teachers' forward passes cost most of a distillation step; ``teacher_precision`` (bf16 autocast also
on CPUs with AMX/AVX512-BF16, or fp32 on CUDA) and ``teacher_channels_last`` change only how they run.
``benchmarks/train_step.py`` measures what each gives.
"""
from typing import List

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context

from nnunet_teachformer.distillation.attention import attention_feature_similarity
from nnunet_teachformer.distillation.losses import pixelwise_distillation, valid_mask
from nnunet_teachformer.distillation.teachers import (StudentRun, TeacherEnsemble, TeacherRef, load_teachers,
                                                      teacher_refs_from_environment)
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC
from nnunet_teachformer.networks.taps import capture_taps
from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
from nnunet_teachformer.trainers.progress import DistillationProgressLogger

LOSS_TERMS = ("train_l_seg", "train_l_afs", "train_l_pwd")
TEACHERS_FILE = "teachers.json"  # in fold_X: the teachers that taught this fold


class TeachFormerTrainer(ArchitectureTrainer):
    network_spec = HDENSEFORMER_LIGHT_SPEC
    teacher_trainers = ("HDenseFormerTrainer", "SwinUNETRTrainer", "UNETRTrainer")
    teacher_variant = ""
    teacher_checkpoint = "checkpoint_final.pth"
    afs_weight = 1.0
    afs_taps = ("coarse", "fine")
    attention_power = 2.0
    afs_normalisation = "l2"  # unit-norm maps: "l2" or "l1"
    afs_distance = "l2"  # squared L2 or L1 distance between the normalised maps
    pwd_weight = 1.0
    pwd_temperature = 3.0
    pwd_combination = "mean"  # "mean", "gt_confidence" or "entropy"
    # how the teachers run; their forward passes are most of a distillation step's cost (benchmarks/train_step.py)
    teacher_precision = "auto"  # "auto": as the student (bf16 autocast on CUDA, fp32 on CPU); "bf16"; "fp32"
    teacher_channels_last = False  # channels-last (NDHWC) weights and inputs for the teachers' 3D convolutions

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger.local_logger = DistillationProgressLogger(LOSS_TERMS)
        self.teachers = None  # TeacherEnsemble, set in on_train_start

    def teacher_refs(self):
        default = tuple(TeacherRef(t + self.teacher_variant, self.teacher_checkpoint) for t in self.teacher_trainers)
        return teacher_refs_from_environment(default)

    def on_train_start(self):
        _, validation_cases = self.do_split()
        run = StudentRun(
            dataset_name=self.plans_manager.dataset_name, plans=self.plans_manager.plans,
            configuration=self.configuration_name, fold=self.fold, dataset_json=self.dataset_json,
            validation_cases=tuple(validation_cases), splits=self._load_splits(), results_root=str(nnUNet_results))
        teachers = load_teachers(self.teacher_refs(), run, self.device)
        self.teachers = self.teacher_ensemble(teachers)
        if self.local_rank == 0:  # which teachers taught this fold, for the report (TEACHFORMER_TEACHERS may differ)
            save_json([{"trainer": t.ref.trainer, "checkpoint": str(t.checkpoint_path)} for t in teachers],
                      join(self.output_folder, TEACHERS_FILE))
        taps = self.teachers.taps
        self.print_to_log_file(
            "Teach-Former distillation: teachers " + ", ".join(str(t.checkpoint_path) for t in teachers) +
            f" (precision {self.teacher_precision}, channels_last {self.teacher_channels_last})" +
            f"; loss = L_SEG + {self.afs_weight} * L_AFS(taps {list(taps)}, p={self.attention_power}, "
            f"{self.afs_normalisation}-normalised, {self.afs_distance} distance) + {self.pwd_weight} * "
            f"L_PWD(T={self.pwd_temperature}, {self.pwd_combination} of teachers)")
        super().on_train_start()

    def teacher_ensemble(self, teachers) -> TeacherEnsemble:
        """The teachers as this trainer runs them (benchmarks time single teachers through this too)."""
        return TeacherEnsemble(teachers, self.afs_taps if self.afs_weight else (), self.attention_power,
                               self.pwd_temperature, self.pwd_combination, need_probabilities=bool(self.pwd_weight),
                               channels_last=self.teacher_channels_last)

    def teacher_autocast(self):
        """The autocast context of the teachers' forward passes (``teacher_precision``)."""
        if self.teacher_precision == "auto":
            return self._autocast()
        if self.teacher_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.teacher_precision == "fp32":
            return dummy_context()
        raise ValueError(f"{type(self).__name__}.teacher_precision must be 'auto', 'bf16' or 'fp32', "
                         f"not {self.teacher_precision!r}")

    def _load_splits(self) -> List[dict]:
        splits_file = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        return load_json(splits_file) if isfile(splits_file) else []

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
                                             self.afs_normalisation, self.afs_distance, valid)
                for tap in self.teachers.taps]).mean() if self.teachers.taps else zero
            full_output = output[0] if isinstance(output, (list, tuple)) else output
            l_pwd = pixelwise_distillation(full_output, signals.probabilities, self.pwd_temperature, valid) \
                if signals.probabilities is not None else zero
            loss = l_seg + self.afs_weight * l_afs + self.pwd_weight * l_pwd
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy(), "train_l_seg": l_seg.detach().cpu().numpy(),
                "train_l_afs": l_afs.detach().cpu().numpy(), "train_l_pwd": l_pwd.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key in LOSS_TERMS:
            self.logger.log(key, float(np.mean(outputs[key])), self.current_epoch)
        self.print_to_log_file("L_SEG", np.round(self.logger.get_value("train_l_seg", -1), 4),
                               "L_AFS", np.round(self.logger.get_value("train_l_afs", -1), 4),
                               "L_PWD", np.round(self.logger.get_value("train_l_pwd", -1), 4))
