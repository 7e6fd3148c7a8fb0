"""``ArchitectureTrainer``: the nnU-Net trainer every network of this package trains with.

A subclass names its network (``network_spec``) and nothing else; settings are class attributes, so
variants are two-line subclasses in nnU-Net's style (the U-Net students, built from the plans, add a mix-in:
``unet_students``). Relative to ``nnUNetTrainer`` it changes:

* the network: built from the spec and the plans' patch size (``build_network_architecture`` is a
  classmethod so it sees the subclass's preset; callers use nnU-Net's signature unchanged, which is
  how ``nnUNetv2_predict`` rebuilds the network from plans + checkpoint);
* the optimiser: Adam, lr 1e-3, weight decay 1e-4 (the Teach-Former paper), nnU-Net's poly schedule;
* the loss: L_SEG = focal + soft Dice, deep supervision with the network's own heads, if any;
* precision: fp32 on CPU; bf16 autocast on CUDA, never fp16 (fp16 overflows in attention make
  transformer losses NaN in nnU-Net); torch.compile only when nnUNet_compile asks for it;
* the study protocol (``StudyProtocol``): inner hold-out selection, early stopping, provenance;
* a patch the network cannot take stops the trainer before anything is written, with the fix (on plans
  not made by ``teachformer plan`` the patch is first adapted: ``patch_adaptation``).
"""
import os
from typing import Optional

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_teachformer.distillation.losses import SegmentationLoss
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.precision import reduced_precision_dtype
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.taps import unwrap_network
from nnunet_teachformer.nnunet_paths import dataset_id
from nnunet_teachformer.trainers.patch_adaptation import adapt_plans
from nnunet_teachformer.trainers.protocol import StudyProtocol


class ArchitectureTrainer(StudyProtocol, nnUNetTrainer):
    network_spec: Optional[NetworkSpec] = None
    network_preset = "paper"
    learning_rate = 1e-3
    adam_weight_decay = 1e-4

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self._check_before_start(adapt_plans(plans, configuration)[0], configuration, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.learning_rate
        self.weight_decay = self.adam_weight_decay
        self.enable_deep_supervision = self.network_spec.has_deep_supervision
        if self.device.type == "cuda":  # bf16 where native, else fp32: what the networks do under any autocast
            self.grad_scaler = None
            torch.set_autocast_dtype("cuda", reduced_precision_dtype("cuda"))

    @classmethod
    def _check_before_start(cls, plans: dict, configuration: str, dataset_json: dict) -> None:
        """Refuses, before nnU-Net creates any folder, what this trainer cannot train."""
        plans_manager = PlansManager(plans)
        if configuration not in plans_manager.available_configurations:
            return  # nnU-Net itself reports unknown configurations
        patch = plans_manager.get_configuration(configuration).patch_size
        problem = cls.network_spec.patch_problem(patch, str(dataset_id(plans_manager.dataset_name)))
        if problem:
            raise TeachFormerError(f"{cls.__name__} cannot train configuration '{configuration}' of plans "
                                   f"'{plans_manager.plans_name}': {problem}")
        if plans_manager.get_label_manager(dataset_json).has_regions:
            raise TeachFormerError(
                f"{cls.__name__}: dataset.json defines region-based labels (overlapping label groups). "
                f"nnunet-teachformer trains softmax label maps only; give each structure its own label value.")

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return cls.network_spec.build(num_input_channels, num_output_channels, configuration_manager.patch_size,
                                      preset=cls.network_preset, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return [[s] * len(self.configuration_manager.patch_size) for s in self.network_spec.deep_supervision_scales]

    def set_deep_supervision_enabled(self, enabled: bool):
        if self.enable_deep_supervision:
            unwrap_network(self.network).deep_supervision = enabled

    def _build_loss(self):
        loss = SegmentationLoss(batch_dice=self.configuration_manager.batch_dice,
                                ignore_label=self.label_manager.ignore_label, ddp=self.is_ddp)
        if self.enable_deep_supervision:
            weights = np.array([1 / 2 ** i for i in range(len(self._get_deep_supervision_scales()))])
            loss = DeepSupervisionWrapper(loss, weights / weights.sum())
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _do_i_compile(self):
        if os.environ.get("nnUNet_compile", "").lower() not in ("true", "1", "t"):
            return False
        return super()._do_i_compile()

    def plot_network_architecture(self):
        pass  # nnU-Net's hiddenlayer plot does not understand these networks
